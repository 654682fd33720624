"""`SDMHead`: a Flax NNX SDM output layer with its exemplar memory, calibration and checkpoints.

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760, §3.1 and App. A.4: the
exemplar adaptor standardises a frozen hidden state h with scalar (μ, σ), maps it by a Dense layer
to the exemplar vector h' (the space of the nearest-neighbour search) and by a second Dense layer,
with no nonlinearity between, to the logits z'. The head keeps the training exemplars and the
calibration statistics as non-trainable state; `fit_sdm` trains it, `calibrate` runs Alg. 1 and
`predict` returns the SDM estimator's outputs (`sdm_estimate`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from jaxdl.nn.sdm.calibration import SDMCalibration, calibrate_thresholds
from jaxdl.nn.sdm.estimator import CalibrationPoints, ExemplarMemory, SDMOutput, SDMState, sdm_estimate
from jaxdl.nn.sdm.similarity import ClassECDF

DEFAULT_K = 2048
"""The reference's neighbour cap (``maxQAvailableFromIndexer``), hence the largest possible q."""


class SDMMemory(nnx.Variable):
    """Non-trainable SDM state: the standardisation scalars and the exemplar/calibration `SDMState`.

    Example:
      >>> import jax
      >>> from flax import nnx
      >>> from jaxdl.nn.sdm import SDMHead, SDMMemory
      >>> head = SDMHead(8, 2, hidden=4, rngs=nnx.Rngs(0))
      >>> isinstance(head.state, SDMMemory), head.standardization[...].tolist()  # (μ, σ) before fit_sdm
      (True, [0.0, 1.0])
      >>> len(jax.tree.leaves(nnx.state(head, nnx.Param)))  # an optimizer sees only the 2 kernels, 2 biases
      4
    """


def empty_state(hidden: int, num_classes: int, dtype=jnp.float32) -> SDMState:
    """The state of an unfitted head: no exemplars, no calibration points, nothing admitted.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import distance_quantile
      >>> from jaxdl.nn.sdm.head import empty_state
      >>> state = empty_state(hidden=16, num_classes=3)
      >>> state.memory.vectors.shape, state.distance_ecdf.counts.tolist()
      ((0, 16), [0, 0, 0])
      >>> float(state.calibration.q_min), bool(jnp.isnan(state.calibration.alpha))  # nothing is admitted
      (inf, True)
      >>> distance_quantile(jnp.array([0.0]), state.distance_ecdf).tolist()  # empty classes: d = 0
      [0.0]
    """
    no_samples = ClassECDF(jnp.full((num_classes, 1), jnp.inf, dtype), jnp.zeros(num_classes, jnp.int32))
    return SDMState(
        memory=ExemplarMemory(
            jnp.zeros((0, hidden), dtype), jnp.zeros(0, jnp.int32), jnp.zeros(0, jnp.int32)
        ),
        distance_ecdf=no_samples,
        calibration_points=CalibrationPoints(
            jnp.zeros((0, num_classes), dtype), jnp.zeros(0, dtype), jnp.zeros(0, jnp.int32)
        ),
        calibration=SDMCalibration(
            alpha=jnp.asarray(jnp.nan, dtype),
            q_min=jnp.asarray(jnp.inf, dtype),
            thresholds=jnp.zeros(num_classes, dtype),
            q_prime_ecdf=no_samples,
        ),
    )


class SDMHead(nnx.Module):
    """An SDM output layer over frozen features ([ACT] §3.1, App. A.4).

    ``head(x)`` gives ``(logits [B, C], exemplar_vectors [B, hidden])``; after `fit_sdm` and
    `calibrate`, ``head.predict(x)`` gives the full `SDMOutput` (SDM probabilities, q, q', d,
    prediction, admission and the nearest exemplars).

    Args:
      in_features: D, the size of the frozen features h.
      num_classes: C.
      hidden: M, the size of the exemplar vector h' (1000 in the paper).
      k: neighbours searched, the cap on q (2048 in the reference code).
      rngs: the random generators for the Dense initialisers.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> head = SDMHead(8, 3, hidden=16, rngs=nnx.Rngs(0))
    >>> logits, exemplars = head(jnp.ones((2, 8)))
    >>> logits.shape, exemplars.shape
    ((2, 3), (2, 16))
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: int = 1000, *, k: int = DEFAULT_K, rngs: nnx.Rngs
    ):
        for name, value, low in (
            ("in_features", in_features, 1),
            ("num_classes", num_classes, 2),
            ("hidden", hidden, 1),
            ("k", k, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"SDMHead: {name} must be an int >= {low}, got {value!r}")
        self.in_features, self.num_classes, self.hidden, self.k = in_features, num_classes, hidden, k
        self.exemplar = nnx.Linear(in_features, hidden, rngs=rngs)
        self.classifier = nnx.Linear(hidden, num_classes, rngs=rngs)
        # Scalar mean and standard deviation over all entries of the training features ([CODE]).
        self.standardization = SDMMemory(jnp.array([0.0, 1.0]))
        self.state = SDMMemory(empty_state(hidden, num_classes))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(logits z' [B, C], exemplar vectors h' [B, hidden])`` for features ``x [B, in_features]``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"SDMHead: x must have {self.in_features} features in its last axis, got {x.shape}"
            )
        mean, std = self.standardization[...]
        exemplar_vectors = self.exemplar((x - mean) / std)
        return self.classifier(exemplar_vectors), exemplar_vectors

    @property
    def memory_size(self) -> int:
        return self.state.get_value().memory.vectors.shape[0]

    def calibrate(self, alpha: float = 0.95) -> SDMCalibration:
        """Runs Alg. 1 on the stored calibration points for target accuracy ``alpha`` and keeps the result."""
        state: SDMState = self.state.get_value()
        if state.calibration_points.labels.shape[0] == 0:
            raise ValueError(
                "SDMHead.calibrate: the head has no calibration points; fit it with fit_sdm first"
            )
        calibration = calibrate_thresholds(*state.calibration_points, alpha)
        self.state.set_value(state._replace(calibration=calibration))
        return calibration

    def predict(self, x: jax.Array, **search_options) -> SDMOutput:
        """The SDM estimator for features ``x [B, in_features]`` (see `sdm_estimate`).

        Args:
          x: ``[B, in_features]`` features.
          **search_options: passed to `nearest_neighbours`: ``block_size``, ``query_block_size``,
            ``compute_dtype``, ``precision``, ``mesh``, ``axis_name``.
        """
        state: SDMState = self.state.get_value()
        if state.memory.vectors.shape[0] == 0:
            raise ValueError("SDMHead.predict: the head has no exemplar memory; fit it with fit_sdm first")
        alpha = state.calibration.alpha
        if not isinstance(alpha, jax.core.Tracer) and bool(jnp.isnan(alpha)):
            raise ValueError("SDMHead.predict: the head is not calibrated; call head.calibrate(alpha) first")
        k = min(self.k, state.memory.vectors.shape[0])
        return _predict(self, jnp.asarray(x), k, tuple(sorted(search_options.items())))


@functools.partial(nnx.jit, static_argnums=(2, 3))
def _predict(head: SDMHead, x: jax.Array, k: int, search_options: tuple) -> SDMOutput:
    logits, exemplar_vectors = head(x)
    return sdm_estimate(logits, exemplar_vectors, head.state.get_value(), k=k, **dict(search_options))


def _abstract_like(template, metadata):
    """The template's tree (NamedTuples included) with the checkpoint's shapes and dtypes."""

    def leaf(path, _):
        node = metadata
        for key in path:
            node = node[getattr(key, "key", getattr(key, "name", getattr(key, "idx", None)))]
        return jax.ShapeDtypeStruct(node.shape, node.dtype)

    return jax.tree_util.tree_map_with_path(leaf, template)


def save_head(directory: str | Path, head: SDMHead) -> None:
    """Writes the head's weights, standardisation, exemplar memory and calibration with orbax.

    Args:
      directory: a new (or overwritten) checkpoint directory.
      head: the head to save.

    Example:
      >>> import os, tempfile
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxdl.nn.sdm import CalibrationPoints, ExemplarMemory, SDMHead, restore_head, save_head
      >>> head = SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(0))
      >>> labels = jnp.array([0, 1, 1])
      >>> head.state.set_value(  # three exemplars and calibration points, as fit_sdm would store them
      ...     head.state.get_value()._replace(
      ...         memory=ExemplarMemory(jnp.ones((3, 8)), labels, jnp.array([0, 1, 0])),
      ...         calibration_points=CalibrationPoints(jnp.full((3, 2), 0.5), jnp.ones(3), labels),
      ...     )
      ... )
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     save_head(os.path.join(tmp, "head"), head)
      ...     restored = restore_head(os.path.join(tmp, "head"), SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(1)))
      >>> restored.memory_size, restored.state.get_value().memory.predictions.tolist()
      (3, [0, 1, 0])
      >>> bool((restored.exemplar.kernel[...] == head.exemplar.kernel[...]).all())
      True
    """
    if head.memory_size == 0:
        raise ValueError("save_head: the head has no exemplar memory; fit it with fit_sdm before saving")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(directory).absolute(), nnx.to_pure_dict(nnx.state(head)), force=True)
    checkpointer.wait_until_finished()


def restore_head(directory: str | Path, head: SDMHead) -> SDMHead:
    """Loads a checkpoint written by `save_head` into ``head`` (built with the same arguments).

    The memory and calibration sizes come from the checkpoint, so ``head`` may be freshly built.

    >>> import tempfile
    >>> import jax, numpy as np
    >>> from flax import nnx
    >>> from jaxdl.nn.sdm.fit import fit_sdm
    >>> x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int32)
    >>> head = SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(0))
    >>> _ = fit_sdm(head, (x[:20], y[:20]), (x[20:], y[20:]), key=jax.random.key(0), epochs=1, progress=False)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_head(tmp + "/head", head)
    ...     restored = restore_head(tmp + "/head", SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(1)))
    >>> bool((restored.predict(x).probs == head.predict(x).probs).all())
    True
    """
    directory = Path(directory).absolute()
    checkpointer = ocp.StandardCheckpointer()
    state = nnx.state(head)
    template = nnx.to_pure_dict(state)
    metadata = checkpointer.metadata(directory).item_metadata.tree
    restored = checkpointer.restore(directory, _abstract_like(template, metadata))
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(head, state)
    return head
