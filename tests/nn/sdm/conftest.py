"""A fitted SDM head shared by the head and Linen tests (fitting dominates their run time)."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdl.nn.sdm import SDMHead, fit_sdm

SDM_CLASSES, SDM_FEATURES = 3, 16


def mixture(rng, n, noise=0.03):
    """Well-separated Gaussian clusters; a fraction ``noise`` of labels is redrawn at random."""
    means = np.random.default_rng(42).normal(size=(SDM_CLASSES, SDM_FEATURES)) * 1.5
    labels = rng.integers(0, SDM_CLASSES, size=n)
    x = means[labels] + rng.normal(size=(n, SDM_FEATURES))
    labels = np.where(rng.uniform(size=n) < noise, rng.integers(0, SDM_CLASSES, size=n), labels)
    return x.astype(np.float32), labels.astype(np.int32)


@pytest.fixture(scope="session")
def fitted():
    """(head fitted and calibrated at alpha 0.9, fit history, held-out (features, labels))."""
    rng = np.random.default_rng(0)
    train, calibration, test = mixture(rng, 800), mixture(rng, 800), mixture(rng, 3000)
    head = SDMHead(SDM_FEATURES, SDM_CLASSES, hidden=32, k=256, rngs=nnx.Rngs(0))
    history = fit_sdm(
        head,
        train,
        calibration,
        key=jax.random.key(0),
        optimizer=optax.adam(3e-3),
        epochs=12,
        alpha=0.9,
        progress=False,
    )
    return head, history, test
