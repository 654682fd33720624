"""The optimizer rows of the bad-input catalogue (/work/shared/reference/bad-inputs.md, issue #15):
one case per row. Each asserts the error type and that the message names the argument, or that
the result is the right one."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.optim import (
    diffgrad,
    fused_adam,
    lamb,
    nlm_alignment,
    perp_adamw,
    perp_sgd,
    perpgrad,
)
from tests.reference.optimizers import DiffGrad, perp

W = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]])}
G = {"w": jnp.array([[0.3, 0.1], [-0.2, 0.4], [0.5, -0.6]])}
ROW = {"w": jnp.array([1.0, 2.0])}


def _update(tx, grads, params):
    return tx.update(grads, tx.init(params), params)[0]


def _raises(exc, match, fn):
    def case():
        with pytest.raises(exc, match=match):
            fn()

    return case


def _complex_diffgrad():
    w = {"w": jnp.array([1 + 2j, 3 - 1j], jnp.complex64)}
    g = {"w": jnp.array([0.5 - 1j, 2 + 1j], jnp.complex64)}
    with jax.enable_x64(True):
        w64, g64 = (jax.tree.map(lambda x: x.astype(jnp.complex128), t) for t in (w, g))
        ours = optax.apply_updates(w64, _update(diffgrad(1e-2), g64, w64))
    expected = DiffGrad(1e-2).step({"w": np.asarray(w64["w"])}, {"w": np.asarray(g64["w"])})
    np.testing.assert_allclose(ours["w"], expected["w"], rtol=1e-12)  # v uses |g|^2
    assert _update(diffgrad(1e-2), g, w)["w"].dtype == jnp.complex64


def _complex_perpgrad():
    w = jnp.array([1 + 2j, 3 - 1j, -0.5j], jnp.complex64)
    g = jnp.array([0.5 - 1j, 2 + 1j, 1.0], jnp.complex64)
    out = perpgrad().update(g, optax.EmptyState(), w)[0]
    assert abs(float(jnp.real(jnp.vdot(w, out)))) < 1e-6  # Re<w, g_perp> = 0
    as_real = lambda z: np.stack([np.real(z), np.imag(z)], -1).astype(np.float64)
    expected = perp(as_real(g), as_real(w))  # C^n as R^2n
    np.testing.assert_allclose(as_real(out), expected, rtol=1e-5, atol=1e-6)


def _complex_lamb():
    w = {"w": jnp.array([[1 + 2j, 3 - 1j]], jnp.complex64)}
    g = {"w": jnp.array([[0.5 - 1j, 2 + 1j]], jnp.complex64)}
    np.testing.assert_allclose(
        _update(lamb(1e-2), g, w)["w"], _update(optax.lamb(1e-2), g, w)["w"], rtol=1e-6
    )


def _lists_diffgrad():
    as_list, as_array = {"w": [1.0, 2.0]}, {"w": jnp.array([1.0, 2.0])}
    ours = _update(diffgrad(1e-3), as_list, as_list)
    np.testing.assert_allclose(jnp.stack(ours["w"]), _update(diffgrad(1e-3), as_array, as_array)["w"])


def _lists_perpgrad():
    # A list is a pytree node: each entry is a scalar leaf, whose orthogonal complement is {0}.
    out = perpgrad().update({"w": [1.0, 2.0]}, optax.EmptyState(), {"w": [3.0, 1.0]})[0]
    assert all(abs(float(x)) < 1e-4 * 2.0 for x in out["w"])


def _nan_once_like_optax_adam():
    tx, peer = diffgrad(1e-2), optax.adam(1e-2)
    state, peer_state = tx.init(ROW), peer.init(ROW)
    grads = [jnp.array([jnp.nan, 1.0])] + [jnp.array([1.0, 1.0])] * 3
    for g in grads:
        update, state = tx.update({"w": g}, state, ROW)
        peer_update, peer_state = peer.update({"w": g}, peer_state, ROW)
    # NaN stays in its coordinate, as in optax.adam; the other coordinate is unaffected.
    np.testing.assert_array_equal(jnp.isnan(update["w"]), jnp.isnan(peer_update["w"]))
    assert bool(jnp.isnan(update["w"][0])) and bool(jnp.isfinite(update["w"][1]))


def _zero_params_perp_adamw():
    zero = {"w": jnp.zeros(2)}
    g = {"w": jnp.array([0.5, -1.0])}
    # w = 0: g passes through the projection unchanged, so the step is optax.adamw's.
    np.testing.assert_allclose(
        _update(perp_adamw(1e-2), g, zero)["w"], _update(optax.adamw(1e-2), g, zero)["w"]
    )


def _parallel_perpgrad():
    w = jnp.array([1.0, 2.0, -0.5, 3.0])
    out = perpgrad().update(3 * w, optax.EmptyState(), w)[0]
    unscaled = perpgrad(renormalize=False).update(3 * w, optax.EmptyState(), w)[0]
    # Round-off, rescaled by at most the documented cap eps^(-3/4), far shorter than ||g||.
    np.testing.assert_allclose(out, np.finfo(np.float32).eps ** -0.75 * unscaled, rtol=1e-5)
    assert float(jnp.linalg.norm(out)) < 1e-2 * float(jnp.linalg.norm(3 * w))


def _inf_params_lamb():
    w = {"w": jnp.array([jnp.inf, 1.0])}
    g = {"w": jnp.array([0.5, -1.0])}
    # Non-finite parameters give what optax.lamb gives (documented: no check on traced values).
    np.testing.assert_array_equal(_update(lamb(1e-2), g, w)["w"], _update(optax.lamb(1e-2), g, w)["w"])


def _inject_negative_lr_mid_run():
    tx = optax.inject_hyperparams(diffgrad)(learning_rate=1e-3)
    state = tx.init(ROW)
    state.hyperparams["learning_rate"] = jnp.asarray(-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        tx.update(ROW, state, ROW)


def _inject_bf16_suggests_hyperparam_dtype():
    bf16 = {"w": jnp.ones(2, jnp.bfloat16)}
    with pytest.raises(ValueError, match=r"b2 must lie in \[0, 1\).*hyperparam_dtype=jnp.float32"):
        optax.inject_hyperparams(diffgrad)(learning_rate=1e-3).init(bf16)
    # The suggested fix works; the float32 learning rate promotes the update, as in optax.adam.
    tx = optax.inject_hyperparams(diffgrad, hyperparam_dtype=jnp.float32)(learning_rate=1e-3)
    peer = optax.inject_hyperparams(optax.adam, hyperparam_dtype=jnp.float32)(learning_rate=1e-3)
    assert _update(tx, bf16, bf16)["w"].dtype == _update(peer, bf16, bf16)["w"].dtype
    assert optax.apply_updates(bf16, _update(tx, bf16, bf16))["w"].dtype == jnp.bfloat16


def _int_grads():
    tx = diffgrad(1e-3)
    with pytest.raises(TypeError, match=r"grads\['w'\] has dtype int32"):
        tx.update({"w": jnp.array([1, 2])}, tx.init(ROW), ROW)


CASES = {
    # Hyperparameters (rows 7-20).
    "diffgrad(learning_rate=-1e-3)": _raises(ValueError, "learning_rate", lambda: diffgrad(-1e-3)),
    "diffgrad(nan)": _raises(ValueError, "learning_rate", lambda: diffgrad(math.nan)),
    "diffgrad(inf)": _raises(ValueError, "learning_rate", lambda: diffgrad(math.inf)),
    "diffgrad(b1=1.0)": _raises(ValueError, "b1", lambda: diffgrad(1e-3, b1=1.0)),
    "diffgrad(b2=-0.1)": _raises(ValueError, "b2", lambda: diffgrad(1e-3, b2=-0.1)),
    "diffgrad(eps=0.0)": _raises(ValueError, "eps", lambda: diffgrad(1e-3, eps=0.0)),
    "diffgrad(weight_decay=-1)": _raises(ValueError, "weight_decay", lambda: diffgrad(1e-3, weight_decay=-1)),
    "lamb(max_grad_norm=0)": _raises(ValueError, "max_grad_norm", lambda: lamb(1e-3, max_grad_norm=0)),
    "lamb(eps_root=-1)": _raises(ValueError, "eps_root", lambda: lamb(1e-3, eps_root=-1)),
    "perp_sgd(momentum=1.5)": _raises(ValueError, "momentum", lambda: perp_sgd(1e-2, momentum=1.5)),
    "perpgrad(renormalize='yes')": _raises(TypeError, "renormalize", lambda: perpgrad(renormalize="yes")),
    "perp_adamw(-1e-2)": _raises(ValueError, "learning_rate", lambda: perp_adamw(-1e-2)),
    "diffgrad('0.001') string lr": _raises(TypeError, "learning_rate", lambda: diffgrad("0.001")),
    "diffgrad(vector lr)": _raises(
        ValueError, "learning_rate must be a scalar", lambda: diffgrad(jnp.array([1e-3, 1e-2]))
    ),
    # Leaves (rows 21-24, 34-35).
    "diffgrad int32 params": _raises(
        TypeError,
        r"params\['w'\] has dtype int32",
        lambda: diffgrad(1e-3).init({"w": jnp.ones((3, 2), jnp.int32)}),
    ),
    "diffgrad int32 grads": _int_grads,
    "diffgrad complex64: |g|^2 as optax": _complex_diffgrad,
    "perpgrad complex64: Re<w, g_perp> = 0": _complex_perpgrad,
    "lamb complex64 equals optax.lamb": _complex_lamb,
    "diffgrad Python-list leaves": _lists_diffgrad,
    "perpgrad Python-list leaves": _lists_perpgrad,
    # Trees that do not match (rows 25-31, 39).
    "perpgrad grads missing a leaf": _raises(
        ValueError,
        "grads must have the structure of params",
        lambda: perpgrad().update(G, optax.EmptyState(), {**W, "b": jnp.ones(2)}),
    ),
    "diffgrad grads with an extra leaf": _raises(
        ValueError,
        "grads must have the structure of params",
        lambda: diffgrad(1e-3).update({**G, "b": jnp.ones(2)}, diffgrad(1e-3).init(W), W),
    ),
    "perpgrad grad (3,2) vs param (2,)": _raises(
        ValueError,
        r"grads\['w'\] has shape \(3, 2\) but params\['w'\] has shape \(2,\)",
        lambda: perpgrad().update(G, optax.EmptyState(), ROW),
    ),
    "perp_adamw grad (3,2) vs param (2,)": _raises(
        ValueError,
        r"grads\['w'\] has shape \(3, 2\) but params\['w'\]",
        lambda: _update(perp_adamw(1e-2), G, ROW),
    ),
    "lamb grad (3,2) vs param (1,2) (broadcastable)": _raises(
        ValueError,
        r"grads\['w'\] has shape \(3, 2\) but params\['w'\] has shape \(1, 2\)",
        lambda: _update(lamb(1e-2), G, {"w": jnp.ones((1, 2))}),
    ),
    "lamb.update without params": _raises(
        ValueError, "params", lambda: lamb(1e-2).update(G, lamb(1e-2).init(W))
    ),
    "perp_adamw.update without params": _raises(
        ValueError, "params", lambda: perp_adamw(1e-2).update(G, perp_adamw(1e-2).init(W))
    ),
    "lamb(trust_ratio_mask) wrong structure": _raises(
        ValueError, "trust_ratio_mask", lambda: _update(lamb(1e-3, trust_ratio_mask={"x": True}), G, W)
    ),
    "diffgrad(weight_decay_mask=list) for dict params": _raises(
        ValueError,
        "weight_decay_mask",
        lambda: _update(diffgrad(1e-3, weight_decay=0.1, weight_decay_mask=[True, False]), G, W),
    ),
    "nlm_alignment mismatched trees": _raises(
        ValueError,
        "grads must have the structure of params",
        lambda: nlm_alignment(G, {**W, "b": jnp.ones(2)}),
    ),
    # Values (rows 36-38, 40-41) and inject_hyperparams.
    "diffgrad NaN gradient once": _nan_once_like_optax_adam,
    "perp_adamw all-zero params": _zero_params_perp_adamw,
    "perpgrad g parallel to w": _parallel_perpgrad,
    "lamb inf in params": _inf_params_lamb,
    "inject_hyperparams(diffgrad) lr = -1 mid-run": _inject_negative_lr_mid_run,
    "inject_hyperparams(diffgrad).init(bf16 params)": _inject_bf16_suggests_hyperparam_dtype,
    # The fused path refuses what it does not handle.
    "fused_adam complex params": _raises(
        TypeError,
        r"params\['w'\] is complex",
        lambda: fused_adam(1e-3).init({"w": jnp.ones(2, jnp.complex64)}),
    ),
    "fused_adam int params": _raises(
        TypeError,
        r"params\['w'\] has dtype int32",
        lambda: fused_adam(1e-3).init({"w": jnp.ones(2, jnp.int32)}),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input(case):
    case()
