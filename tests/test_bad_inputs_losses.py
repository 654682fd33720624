"""The `losses` rows of the bad-input catalogue (issue #15, shared/reference/bad-inputs.md), one
case per row, plus cases of the same kinds: each raises a ValueError/TypeError that names the
argument before XLA sees it, or returns the right answer (from Def. 4 of Prieto et al. 2025)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.losses import softmax_collapse_fraction, stablemax_cross_entropy
from jaxdl.nn import log_stablemax, stablemax
from tests.reference.optimizers import stablemax as stablemax_reference

# Value checks run jitted: one compiled program per shape instead of op-by-op dispatch.
stce = jax.jit(stablemax_cross_entropy)
LOGITS = jnp.array([[1.0, -2.0, 0.5], [0.0, 1.0, 2.0]])
LABELS = jnp.array([0, 2])

# (id, call, error type, words the message must contain)
ERRORS = [
    (
        "stce int logits",
        lambda: stablemax_cross_entropy(jnp.ones((2, 3), jnp.int32), LABELS),
        TypeError,
        "logits",
    ),
    (
        "stce float labels",
        lambda: stablemax_cross_entropy(LOGITS, jnp.array([0.0, 1.0])),
        TypeError,
        "labels",
    ),
    (
        "stce labels (2, 1)",
        lambda: stablemax_cross_entropy(LOGITS, jnp.zeros((2, 1), jnp.int32)),
        ValueError,
        "labels",
    ),
    ("stce label 5 of 3", lambda: stablemax_cross_entropy(LOGITS, jnp.array([5, 0])), ValueError, "labels"),
    ("stce label -1", lambda: stablemax_cross_entropy(LOGITS, jnp.array([-1, 0])), ValueError, "labels"),
    ("stce zero classes", lambda: stablemax_cross_entropy(jnp.ones((2, 0)), LABELS), ValueError, "logits"),
    (
        "stce scalar logits",
        lambda: stablemax_cross_entropy(jnp.float32(1.0), jnp.int32(0)),
        ValueError,
        "logits",
    ),
    (
        "stce dtype int32",
        lambda: stablemax_cross_entropy(LOGITS, LABELS, dtype=jnp.int32),
        TypeError,
        "dtype",
    ),
    (
        "stce dtype nonsense",
        lambda: stablemax_cross_entropy(LOGITS, LABELS, dtype="float65"),
        TypeError,
        "dtype",
    ),
    ("stablemax complex", lambda: stablemax(jnp.ones(3, jnp.complex64)), TypeError, "x must be a floating"),
    ("log_stablemax axis 5", lambda: log_stablemax(LOGITS, axis=5), ValueError, "axis"),
    ("collapse int", lambda: softmax_collapse_fraction(jnp.ones((2, 3), jnp.int32)), TypeError, "logits"),
    ("collapse empty batch", lambda: softmax_collapse_fraction(jnp.ones((0, 3))), ValueError, "logits"),
    ("collapse zero classes", lambda: softmax_collapse_fraction(jnp.ones((2, 0))), ValueError, "logits"),
    ("collapse scalar", lambda: softmax_collapse_fraction(jnp.float32(1.0)), ValueError, "logits"),
]


@pytest.mark.parametrize(("call", "error", "words"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_refused_with_a_message_naming_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_out_of_range_labels_under_jit_give_nan_not_another_class():
    # Traced labels cannot be checked in Python: -1 must not wrap to the last class, 5 must not
    # read past the row. Both give NaN, as optax does for too-large labels.
    loss = stce(LOGITS, jnp.array([-1, 5]))
    assert bool(jnp.all(jnp.isnan(loss)))


def test_plus_inf_logit_gives_the_limit():
    # StableMax puts 1/k on each of k infinite logits: loss log k on one of them, +inf elsewhere.
    logits = jnp.array([[jnp.inf, 0.0, 1.0], [jnp.inf, 0.0, jnp.inf], [1.0, jnp.inf, 0.0]])
    loss = stce(logits, jnp.array([0, 2, 0]))
    np.testing.assert_allclose(loss, [0.0, np.log(2.0), np.inf])
    grad = jax.jit(jax.grad(lambda z: stablemax_cross_entropy(z, jnp.array([0, 2, 2])).sum()))(logits)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_plus_inf_logit_leaves_other_rows_alone():
    logits = jnp.array([[jnp.inf, 0.0, 1.0], [1.0, -2.0, 0.5]])
    loss, grad = jax.jit(jax.value_and_grad(lambda z: stablemax_cross_entropy(z, jnp.array([0, 0]))[1]))(
        logits
    )
    np.testing.assert_allclose(loss, -np.log(12 / 23), rtol=1e-6)
    np.testing.assert_allclose(grad[1], [-0.23913043, 0.02898551, 0.26086957], rtol=1e-5)


def test_minus_inf_logit_has_probability_zero():
    loss = stce(jnp.array([[-jnp.inf, 0.0, 1.0]]), jnp.array([2]))
    np.testing.assert_allclose(loss, [-np.log(2 / 3)], rtol=1e-6)


def test_nan_logit_gives_nan():
    assert bool(jnp.isnan(stce(jnp.array([[jnp.nan, 0.0]]), jnp.array([1]))[0]))


def test_stablemax_of_empty_last_axis():
    assert stablemax(jnp.ones((2, 0))).shape == (2, 0)


def test_stablemax_of_python_list():
    np.testing.assert_allclose(stablemax([1.0, -2.0, 0.5]), [12 / 23, 2 / 23, 9 / 23], rtol=1e-6)


def test_stce_of_empty_batch():
    loss = stablemax_cross_entropy(jnp.ones((0, 3)), jnp.zeros((0,), jnp.int32))
    assert loss.shape == (0,) and loss.dtype == jnp.float32


def test_grad_at_logits_exactly_plus_minus_one_is_finite_and_right():
    logits = np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, 1.0]])
    labels = np.array([0, 1])
    grad = jax.jit(jax.grad(lambda z: stablemax_cross_entropy(z, jnp.asarray(labels)).mean()))(
        jnp.asarray(logits, jnp.float32)
    )
    p = stablemax_reference(logits)
    ds = np.where(logits >= 0, 1.0, 1.0 / (1.0 - np.minimum(logits, 0.0)) ** 2)
    s = np.where(logits >= 0, logits + 1.0, 1.0 / (1.0 - np.minimum(logits, 0.0)))
    expected = (p - np.eye(3)[labels]) * ds / s / 2  # dL/dz = (p - y) g'(z), g' = s'/s
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
