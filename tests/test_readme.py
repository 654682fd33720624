"""Every Python snippet in the README runs as written (in a scratch directory), and what it prints or
states in its comments is right.

Each snippet is found by a line it contains (`CHECKS`); after it runs, its check reads the snippet's
variables and printed output and compares them with values derived independently: closed forms (the
StCE of the README's logits, cos(-g, θ) for parallel g and θ), a dense Hessian from `jax.hessian`
with NumPy's `eigh`, the layer's own recurrent mode against its convolution mode, or the shapes the
comments state.
"""

import math
import re
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _printed_numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", text)]


def check_optim(ns, out):
    # g = θ / 2 everywhere: -g points exactly against θ, so cos(-g, θ) = -1.
    assert float(ns["nlm_alignment"](ns["grads"], ns["params"]).overall) == pytest.approx(-1.0, abs=1e-6)
    assert _printed_numbers(out) == pytest.approx([-1.0], abs=1e-6)
    assert jax.tree.map(jnp.shape, ns["updates"]) == {"w": (3, 2)}
    # The fused step equals the optax-chained ⊥AdamW; for b (θ = 0, nothing to project out) the first
    # Adam step is -lr · g / (|g| + eps) = -0.01.
    net0 = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = {"w": jnp.full((3, 2), 0.5), "b": jnp.ones(2)}
    reference = ns["perp_adamw"](1e-2, weight_decay=0.0)
    updates, _ = reference.update(grads, reference.init(net0), net0)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        ns["net"],
        optax.apply_updates(net0, updates),
    )
    np.testing.assert_allclose(ns["net"]["b"], [-0.01, -0.01], rtol=1e-5)


def check_stablemax(ns, out):
    s = np.array([1.0 + 1.0, 1.0 / (1.0 + 2.0), 0.5 + 1.0])  # s(x) = x + 1 (x ≥ 0), 1 / (1 - x) (x < 0)
    np.testing.assert_allclose(ns["stablemax"](ns["logits"]), [s / s.sum()], rtol=1e-6)
    stce = ns["stablemax_cross_entropy"](ns["logits"], ns["labels"])
    np.testing.assert_allclose(stce, [-math.log(s[0] / s.sum())], rtol=1e-6)
    assert float(stce[0]) == pytest.approx(0.6506, abs=5e-5)  # the value the comment states
    # softmax([0, 40]) in float32: e^-40 ≈ 4e-18 vanishes next to 1, so the one row collapses.
    assert float(ns["softmax_collapse_fraction"](jnp.array([[0.0, 40.0]]))) == 1.0


def check_kan(ns, out):
    assert ns["y"].shape == (4, 16, 192)  # KATMLP: a drop-in MLP keeps the shape
    x, model = ns["x"], ns["model"]
    assert model(x).shape == (1000, 1) and bool(jnp.all(jnp.isfinite(model(x))))


def check_ssm(ns, out):
    assert ns["y"].shape == (4, 256, 64) and ns["y_t"].shape == (4, 64)
    # "recurrent mode, same outputs": step 0 from the empty cache is output 0 of the convolution.
    np.testing.assert_allclose(ns["y_t"], ns["y"][:, 0], rtol=1e-4, atol=1e-5)
    assert ns["logits"].shape == (4, 10)  # the comment's "(4, 10)"


def check_sdm(ns, out):
    o = ns["out"]
    assert o.prediction.shape == (4,) and o.admitted.shape == (4,) and o.neighbours[:, :3].shape == (4, 3)
    assert o.admitted.dtype == jnp.bool_ and bool(jnp.all(o.q >= 0))
    assert "[" in out  # it printed the arrays


def check_ntk(ns, out):
    theta, theta_test, pred = ns["theta"], ns["theta_test"], ns["pred"]
    assert theta.shape == (32, 32) and theta_test.shape == (8, 32) and pred.test.shape == (100, 8, 1)
    # Θ = J Jᵀ from a dense Jacobian (jax.jacrev), independently of jaxdl's structured products.
    jac = jax.jacrev(lambda p: ns["f"](p, ns["x"]))(ns["params"])
    flat = np.concatenate([np.asarray(j).reshape(32, -1) for j in jax.tree.leaves(jac)], axis=1)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(theta, flat @ flat.T, rtol=2e-4, atol=2e-4 * float(jnp.max(theta)))
    assert out.rstrip().endswith("(100, 8, 1)")  # the comment's "..., (100, 8, 1)"
    eig = np.linalg.eigvalsh(np.asarray(theta, np.float64))
    assert _printed_numbers(out)[0] == pytest.approx(eig[-1] / eig[0], rel=0.05)


def check_hessian(ns, out):
    loss_fn, params, batch = ns["loss_fn"], ns["params"], ns["batch"]
    flat, unravel = ravel_pytree(params)
    with jax.default_matmul_precision("highest"):
        dense = np.asarray(jax.hessian(lambda v: loss_fn(unravel(v), batch))(flat), np.float64)
    exact = np.linalg.eigvalsh(dense)[::-1]
    np.testing.assert_allclose(ns["eigenvalues"], exact[:3], rtol=1e-3, atol=1e-5 * exact[0])
    # Hutchinson with 100 probes: within 4 standard errors of the exact trace.
    assert abs(float(ns["trace"]) - np.trace(dense)) <= 4 * float(ns["stderr"]) + 1e-6
    printed = _printed_numbers(out)
    assert printed[:3] == pytest.approx(list(np.asarray(ns["eigenvalues"])), rel=1e-4)


def check_workflows(ns, out):
    state, metrics = ns["state"], ns["metrics"]
    batches = len(ns["data"].Loader(ns["source"], batch_size=256, seed=0))  # full batches per epoch
    assert int(state.step) == batches > 0
    # zero weights give uniform logits and loss log(10) at the first step; Adam lowers it within an epoch
    assert bool(jnp.isfinite(metrics["loss"])) and float(metrics["loss"]) < math.log(10)
    with ns["checkpoint"].Checkpointer("checkpoints") as ckpt:
        assert ckpt.all_steps() == [batches]
        np.testing.assert_array_equal(ckpt.restore(state).params, state.params)


# The line that finds the snippet -> its check.
CHECKS: dict[str, Callable] = {
    "print(nlm_alignment(grads, params).overall)": check_optim,
    "stablemax_cross_entropy(logits, labels)  # per-example StCE": check_stablemax,
    "block = KATMLP(192, 768": check_kan,
    "y_t, cache = layer.step(": check_ssm,
    "out = head.predict(x[:4])": check_sdm,
    "print(ntk_spectrum(theta).condition_number, pred.test.shape)": check_ntk,
    "eigenvalues, eigenvectors, *_ = top_eigenvalues(": check_hessian,
    "ckpt.save(int(state.step), state)": check_workflows,
}


def _check_for(snippet: str) -> Callable | None:
    found = [check for marker, check in CHECKS.items() if marker in snippet]
    assert len(found) <= 1, "a snippet matches two checks"
    return found[0] if found else None


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 8


def test_every_check_finds_its_snippet_and_every_snippet_is_checked():
    for marker in CHECKS:
        assert sum(marker in s for s in SNIPPETS) == 1, f"no README snippet (or several) contains {marker!r}"
    unchecked = [i for i, s in enumerate(SNIPPETS) if _check_for(s) is None]
    assert not unchecked, f"README snippets {unchecked} have no check in tests/test_readme.py: add one"


@pytest.mark.slow
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_snippet_runs_and_prints_what_it_says(snippet, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    exec(compile(snippet, str(README), "exec"), namespace)
    check = _check_for(snippet)
    assert check is not None
    check(namespace, capsys.readouterr().out)
