import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdl.nn.sdm import SDMHead
from jaxdl.nn.sdm import linen as sdm_linen


def test_linen_and_nnx_give_the_same_logits_for_the_same_parameters(rng):
    head = SDMHead(8, 3, hidden=16, rngs=nnx.Rngs(0))
    head.standardization[...] = jnp.array([0.3, 2.0])
    model, variables, _ = sdm_linen.from_nnx(head)
    x = jnp.asarray(rng.normal(size=(5, 8)), jnp.float32)
    for linen_out, nnx_out in zip(model.apply(variables, x), head(x), strict=True):
        np.testing.assert_allclose(linen_out, nnx_out, rtol=1e-6)
    # Linen's own init gives the same structure.
    init = sdm_linen.SDMHead(num_classes=3, hidden=16).init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, variables)


@pytest.mark.slow
def test_linen_predict_matches_nnx_predict(fitted):
    head, _, (x, _) = fitted
    head.calibrate(0.9)
    model, variables, state = sdm_linen.from_nnx(head)
    linen_output = jax.jit(lambda v, x, s: model.apply(v, x, s, method=model.predict))(
        variables, x[:100], state
    )
    jax.tree.map(np.testing.assert_array_equal, linen_output.admitted, head.predict(x[:100]).admitted)
    np.testing.assert_allclose(linen_output.probs, head.predict(x[:100]).probs, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(linen_output.q, head.predict(x[:100]).q)
