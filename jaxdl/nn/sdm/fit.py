"""Training an `SDMHead`: the epoch schedule, model selection and shuffled rounds of the reference.

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760, §3.1.6 and App. A.4:

- epoch 1 uses q = e-2 and d = 1 (plain cross-entropy); after every epoch the training exemplars
  (h'_tr, y_tr, ŷ_tr) are recomputed, training q and d are recomputed against them (self-match
  excluded, d from the training points' own distance eCDFs) for the next epoch, and the calibration
  set's q, d and distance eCDFs are recomputed against them;
- the loss is the SDM loss (Eq. 7); the kept epoch is the one with the lowest class-balanced mean
  SDM loss on the calibration set;
- J rounds each reshuffle D_tr ∪ D_ca, split it 50/50 and re-initialise the weights; the round with
  the lowest balanced calibration loss wins.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxdl.nn.sdm.activation import sdm_activation
from jaxdl.nn.sdm.calibration import _check_alpha, rescaled_similarity
from jaxdl.nn.sdm.estimator import _INDEX_OPTIONS, CalibrationPoints, ExemplarMemory, similarity_and_distance
from jaxdl.nn.sdm.head import SDMHead, _empty_state
from jaxdl.nn.sdm.index import build_index
from jaxdl.nn.sdm.similarity import class_ecdf, distance_quantile


def balanced_mean(values: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """The mean over the classes present of the per-class mean of ``values`` (model selection, §3.1.6).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm.fit import balanced_mean
      >>> print(balanced_mean(jnp.array([1.0, 1.0, 1.0, 0.0]), jnp.array([0, 0, 0, 1]), 2))  # (1 + 0) / 2
      0.5
    """
    member = labels[None, :] == jnp.arange(num_classes)[:, None]
    counts = member.sum(axis=1)
    class_means = jnp.sum(jnp.where(member, values[None, :], 0), axis=1) / jnp.maximum(counts, 1)
    return jnp.sum(jnp.where(counts > 0, class_means, 0)) / jnp.sum(counts > 0)


def _check_split(name: str, split, in_features: int, num_classes: int, min_size: int):
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise TypeError(
            f"fit_sdm: {name} must be a pair (features [N, D], labels [N]), got {type(split).__name__}"
        )
    x, y = np.asarray(split[0]), np.asarray(split[1])
    if x.ndim != 2 or x.shape[1] != in_features:
        raise ValueError(f"fit_sdm: {name} features must have shape [N, {in_features}], got {x.shape}")
    if y.shape != x.shape[:1] or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"fit_sdm: {name} labels must be integers of shape [{x.shape[0]}], got {y.dtype} {y.shape}"
        )
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise ValueError(
            f"fit_sdm: {name} features must be finite numbers, got nan or inf entries (or dtype {x.dtype})"
        )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"fit_sdm: {name} labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    if x.shape[0] < min_size:
        raise ValueError(f"fit_sdm: {name} needs at least {min_size} points, got {x.shape[0]}")
    return x, y.astype(np.int32)


def fit_sdm(
    head: SDMHead,
    train: tuple[jax.Array, jax.Array],
    calibration: tuple[jax.Array, jax.Array],
    *,
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 20,
    batch_size: int = 50,
    rounds: int = 1,
    alpha: float | None = 0.95,
    progress: bool = True,
    **search_options,
) -> dict:
    """Trains ``head`` as the reference does, stores its memory and calibration set, and calibrates it.

    Round 0 uses the given split and the head's current weights; each further round reshuffles the
    union of both sets, splits it 50/50 and re-initialises the weights. Epochs are jitted
    (``lax.scan`` over minibatches).

    Args:
      head: the `SDMHead` to train (updated in place).
      train: ``(features [N_tr, D], labels [N_tr])``, the support set D_tr.
      calibration: ``(features [N_ca, D], labels [N_ca])``, the calibration set D_ca.
      key: PRNG key for minibatch order, reshuffles and re-initialisation.
      optimizer: optax optimizer (default: Adam with learning rate 1e-5, as in the paper).
      epochs: epochs per round (the paper uses 200, the CLI default is 20).
      batch_size: minibatch size (50 in the paper).
      rounds: J, the number of shuffled rounds (10 in the paper).
      alpha: if not None, run ``head.calibrate(alpha)`` at the end.
      progress: show a progress bar (needs tqdm).
      **search_options: index options (``compute_dtype``, ``precision``, ``mesh``: see `build_index`) for
        the exemplar index the head keeps, and search options (block sizes) for `ExemplarIndex.search`.

    Returns:
      A history dict: ``train_loss`` and ``calibration_loss`` (one list of per-epoch values per round),
      ``best_round``, ``best_epoch`` and ``best_calibration_loss``.

    Example:
      >>> import jax, numpy as np, optax
      >>> from flax import nnx
      >>> from jaxdl.nn.sdm import SDMHead, fit_sdm
      >>> rng = np.random.default_rng(0)
      >>> y = rng.integers(0, 2, 400).astype(np.int32)
      >>> x = (rng.normal(size=(400, 8)) + 3 * y[:, None]).astype(np.float32)
      >>> head = SDMHead(8, 2, hidden=16, k=64, rngs=nnx.Rngs(0))
      >>> history = fit_sdm(
      ...     head, (x[:200], y[:200]), (x[200:], y[200:]), key=jax.random.key(0),
      ...     optimizer=optax.adam(1e-3), epochs=2, progress=False,
      ... )
      >>> sorted(history)
      ['best_calibration_loss', 'best_epoch', 'best_round', 'calibration_loss', 'train_loss']
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("rounds", rounds)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"fit_sdm: {name} must be a positive int, got {value!r}")
    x_tr, y_tr = _check_split("train", train, head.in_features, head.num_classes, 2)
    x_ca, y_ca = _check_split("calibration", calibration, head.in_features, head.num_classes, 1)
    if alpha is not None:
        _check_alpha(alpha, "fit_sdm")
    missing = sorted(set(range(head.num_classes)) - set(np.unique(y_ca).tolist()))
    if missing and rounds == 1:
        warnings.warn(
            f"fit_sdm: the calibration set has no points of class(es) {missing}: their distance eCDFs are "
            "empty, so d = 0 for every point and nothing will be admitted ([ACT] Eq. 5)",
            stacklevel=2,
        )
    optimizer = optax.adam(1e-5) if optimizer is None else optimizer
    index_options = {name: value for name, value in search_options.items() if name in _INDEX_OPTIONS}
    search_only = {name: value for name, value in search_options.items() if name not in _INDEX_OPTIONS}
    num_classes = head.num_classes
    graphdef, params, others = nnx.split(head, nnx.Param, ...)  # type: ignore[misc]

    from jaxdl.losses import sdm_log_loss  # here: jaxdl.losses imports this package

    def loss_fn(params, others, x, y, q, d, weight):
        logits, _ = nnx.merge(graphdef, params, others)(x)
        return jnp.sum(weight * sdm_log_loss(logits, y, q, d)) / jnp.maximum(jnp.sum(weight), 1)

    @jax.jit
    def run_epoch(params, opt_state, others, x, y, q, d, batches):
        def step(carry, index):
            params, opt_state = carry
            weight = (index >= 0).astype(x.dtype)
            index = jnp.maximum(index, 0)
            loss, grads = jax.value_and_grad(loss_fn)(
                params, others, x[index], y[index], q[index], d[index], weight
            )
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state, jnp.mean(losses)

    @jax.jit
    def statistics(params, others, x_tr, y_tr, x_ca, y_ca):
        model = nnx.merge(graphdef, params, others)
        logits_tr, vectors_tr = model(x_tr)
        logits_ca, vectors_ca = model(x_ca)
        index = build_index(vectors_tr, **index_options)  # norms (and shards) once for both searches
        memory = ExemplarMemory(index, y_tr, jnp.argmax(logits_tr, axis=-1).astype(jnp.int32))
        k_tr = min(head.k, x_tr.shape[0] - 1)
        q_tr, nearest_tr, _ = similarity_and_distance(
            vectors_tr, memory.predictions, memory, k_tr, exclude=jnp.arange(x_tr.shape[0]), **search_only
        )
        d_tr = distance_quantile(nearest_tr, class_ecdf(nearest_tr, y_tr, num_classes, where=q_tr > 0))
        prediction_ca = jnp.argmax(logits_ca, axis=-1)
        q_ca, nearest_ca, _ = similarity_and_distance(
            vectors_ca, prediction_ca, memory, min(head.k, x_tr.shape[0]), **search_only
        )
        distance_ecdf = class_ecdf(nearest_ca, y_ca, num_classes, where=q_ca > 0)
        q_ca = q_ca.astype(logits_ca.dtype)
        d_ca = distance_quantile(nearest_ca, distance_ecdf)
        loss_ca = balanced_mean(sdm_log_loss(logits_ca, y_ca, q_ca, d_ca), y_ca, num_classes)
        probs_ca = sdm_activation(logits_ca, q_ca, d_ca)
        q_prime_ca = rescaled_similarity(
            q_ca, jnp.take_along_axis(probs_ca, prediction_ca[:, None], axis=1)[:, 0]
        )
        state = _empty_state(head.hidden, num_classes, logits_ca.dtype)._replace(
            memory=memory,
            distance_ecdf=distance_ecdf,
            calibration_points=CalibrationPoints(probs_ca, q_prime_ca, y_ca),
        )
        return q_tr.astype(logits_tr.dtype), d_tr, loss_ca, state

    def minibatches(key, n):
        order = np.asarray(jax.random.permutation(key, n))
        order = np.pad(order, (0, -n % batch_size), constant_values=-1)
        return jnp.asarray(order.reshape(-1, batch_size))

    history: dict[str, Any] = {"train_loss": [], "calibration_loss": []}
    best: tuple[float, Any] = (math.inf, None)
    bar = _progress(rounds * epochs, progress)
    for round_index in range(rounds):
        key, split_key, init_key = jax.random.split(key, 3)
        if round_index > 0:
            x_all, y_all = np.concatenate([x_tr, x_ca]), np.concatenate([y_tr, y_ca])
            order = np.asarray(jax.random.permutation(split_key, len(y_all)))
            half = len(y_all) // 2
            x_tr, y_tr, x_ca, y_ca = (
                x_all[order[:half]],
                y_all[order[:half]],
                x_all[order[half:]],
                y_all[order[half:]],
            )
            fresh = SDMHead(head.in_features, num_classes, head.hidden, k=head.k, rngs=nnx.Rngs(init_key))
            params = nnx.state(fresh, nnx.Param)
        mean, std = float(np.mean(x_tr)), float(np.std(x_tr, ddof=1))
        others = _with_standardization(others, jnp.asarray([mean, std if std > 0 else 1.0], jnp.float32))
        opt_state = optimizer.init(params)
        data = tuple(jnp.asarray(a) for a in (x_tr, y_tr, x_ca, y_ca))
        q_tr = jnp.full(len(y_tr), math.e - 2, jnp.float32)  # epoch 1: plain cross-entropy
        d_tr = jnp.ones(len(y_tr), jnp.float32)
        history["train_loss"].append([])
        history["calibration_loss"].append([])
        for epoch in range(epochs):
            key, batch_key = jax.random.split(key)
            params, opt_state, train_loss = run_epoch(
                params, opt_state, others, data[0], data[1], q_tr, d_tr, minibatches(batch_key, len(y_tr))
            )
            if not math.isfinite(float(train_loss)):
                raise FloatingPointError(
                    f"fit_sdm: the training loss became {float(train_loss)} in round {round_index}, epoch {epoch}; "
                    "lower the learning rate or check the features for inf/nan"
                )
            q_tr, d_tr, loss_ca, state = statistics(params, others, *data)
            history["train_loss"][-1].append(float(train_loss))
            history["calibration_loss"][-1].append(float(loss_ca))
            if float(loss_ca) < best[0]:
                best = (float(loss_ca), (round_index, epoch, params, others, state))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    round=round_index, train=f"{float(train_loss):.4f}", calibration=f"{float(loss_ca):.4f}"
                )
    if bar is not None:
        bar.close()
    if best[1] is None:
        raise FloatingPointError(
            "fit_sdm: the calibration loss was never finite; check the features and learning rate"
        )
    loss, (best_round, best_epoch, params, others, state) = best
    nnx.update(head, params, others)
    head.state.set_value(state)
    if alpha is not None:
        head.calibrate(alpha)
    return history | {"best_round": best_round, "best_epoch": best_epoch, "best_calibration_loss": loss}


def _with_standardization(others: nnx.State, standardization: jax.Array) -> nnx.State:
    pure = nnx.to_pure_dict(others)
    pure["standardization"] = standardization
    nnx.replace_by_pure_dict(others, pure)
    return others


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="fit_sdm", dynamic_ncols=True, mininterval=1.0)
