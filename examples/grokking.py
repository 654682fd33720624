"""Grokking at the edge of numerical stability (Prieto et al., ICLR 2025) on (a + b) mod 113.

The paper's MLP (226 -> 200 -> 200 -> 113, ReLU, no biases, PyTorch's default init) trained
full-batch on 40% of all pairs, three ways:

- AdamW without weight decay, softmax cross-entropy: the baseline. It fits the training set
  and then stalls in Softmax Collapse without generalising.
- ⊥AdamW (lr 1e-2): gradients projected orthogonal to the weights; generalises within a few
  hundred steps, with no memorisation phase (the paper's Fig. 1a).
- StableMax cross-entropy with AdamW: no collapse, so it keeps learning and groks eventually
  (the paper needs ~10^4 steps; the default budget here shows the start).

Every run also records an in-loop monitor (`jaxdl.probes.training_monitor`) inside its jitted
training scan: every `--monitor-every` steps, under `lax.cond`, the sharpness λmax of the loss
Hessian on a fixed probe batch of `--probe-size` training pairs (Lanczos, `--monitor-iters`
steps) against 2/η, the edge of stability of gradient descent (Cohen et al., ICLR 2021; for Adam
the threshold of the preconditioned sharpness is higher). The NLM alignment cos(-g, θ) and the
softmax-collapse fraction are recorded at every step (Prieto et al. 2025, Fig. 5 and Def. 3).

    python examples/grokking.py                     # the three runs, about a minute on 2 idle CPU cores
    python examples/grokking.py --sweep-lr 3e-3,1e-2,3e-2   # one jitted ⊥AdamW run per rate

Writes grokking.png (accuracy, NLM alignment, softmax collapse and sharpness against steps) and
grokking.json (the curves).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import base_parser, progress, save_json, setup

from jaxdl.data.modular import modular_arithmetic
from jaxdl.losses import softmax_collapse_fraction, stablemax_cross_entropy
from jaxdl.optim import nlm_alignment, perp_adamw
from jaxdl.probes import TrainingMonitor, training_monitor

SMOKE_ARGS = [
    "--steps", "20", "--modulus", "17", "--chunk", "10", "--sweep-lr", "1e-2,3e-2",
    "--monitor-every", "10", "--monitor-iters", "4", "--probe-size", "32",
]  # fmt: skip


def init_mlp(key: jax.Array, sizes: list[int]) -> list[jax.Array]:
    """PyTorch's default nn.Linear init (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), no biases."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        jax.random.uniform(k, (n_in, n_out), minval=-1, maxval=1) / np.sqrt(n_in)
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(params: list[jax.Array], pairs: jax.Array) -> jax.Array:
    """The MLP on concatenated one-hots of (a, b). one_hot(a, b) @ W1 is W1[a] + W1[p + b]
    exactly (the other 224 products are exact zeros), so the first layer gathers two rows."""
    modulus = params[0].shape[0] // 2
    x = jax.nn.relu(params[0][pairs[:, 0]] + params[0][modulus + pairs[:, 1]])
    for w in params[1:-1]:
        x = jax.nn.relu(x @ w)
    return x @ params[-1]


LOSSES = {
    "softmax": lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
    "stablemax": lambda logits, y: stablemax_cross_entropy(logits, y).mean(),
}


# The three runs: (loss, optimizer) for a learning rate, and the name --runs selects them by.
# Adam's PyTorch defaults (b2 = 0.999, eps = 1e-8) are what the paper's ⊥AdamW run really used.
RUNS = {
    "AdamW, softmax CE (baseline)": lambda lr: ("softmax", optax.adamw(lr, weight_decay=0.0)),
    "⊥AdamW, softmax CE": lambda lr: ("softmax", perp_adamw(lr, weight_decay=0.0)),
    "AdamW, StableMax CE": lambda lr: ("stablemax", optax.adamw(lr, weight_decay=0.0)),
}
RUN_FLAGS = dict(zip(RUNS, ("baseline", "perp", "stablemax"), strict=True))


def make_chunk(loss_name, tx, data, chunk, *, monitor: TrainingMonitor | None = None):
    """`chunk` full-batch steps in one jitted lax.scan; per-step metrics of the params going in.

    The jitted function is ``run_chunk(carry, start=0)`` with ``carry = (params, opt_state)`` and
    ``start`` the index of the chunk's first step. With a `monitor`, each step calls it (it
    probes when the step index is a multiple of its ``every``) and the metrics gain the fields of
    its record, NaN on the steps it skips."""
    x_train, y_train, x_test, y_test = data
    loss = LOSSES[loss_name]

    def step(carry, index):
        params, opt_state = carry

        def objective(p):
            logits = mlp(p, x_train)
            return loss(logits, y_train), logits

        (value, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        metrics = {
            "loss": value,
            # Counts, not float32 means: a float32 mean of 7662 ones is 0.99999994, never 1.
            "train_correct": jnp.sum(jnp.argmax(logits, -1) == y_train),
            "test_correct": jnp.sum(jnp.argmax(mlp(params, x_test), -1) == y_test),
            "softmax_collapse": softmax_collapse_fraction(logits),
            "nlm_cosine": nlm_alignment(grads, params).overall,
        }
        if monitor is not None:
            record = monitor(index, params, None, jax.random.fold_in(jax.random.key(0), index), grads=grads)
            metrics.update(sharpness=record.sharpness, sharpness_ratio=record.sharpness_ratio)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    return jax.jit(lambda carry, start=0: jax.lax.scan(step, carry, start + jnp.arange(chunk)))


def make_monitor(loss_name, data, lr, *, every, num_iters, probe_size) -> TrainingMonitor:
    """The in-loop monitor of a run: sharpness on the first `probe_size` training pairs (a fixed
    probe batch, as Cohen et al. use), threshold 2/η. NLM and collapse come from the step's own
    metrics, so the monitor skips them here (it has no logits function)."""
    x_probe, y_probe = data[0][:probe_size], data[1][:probe_size]
    loss = LOSSES[loss_name]
    return training_monitor(
        lambda p, _: loss(mlp(p, x_probe), y_probe), learning_rate=lr, every=every, num_iters=num_iters
    )


def first_step_at(accuracies: np.ndarray, target: float = 1.0) -> int | None:
    hits = np.flatnonzero(accuracies >= target)
    return int(hits[0]) if hits.size else None


def accuracies(metrics: dict, data) -> dict:
    """Turn the per-step correct counts into exact accuracies (float64, on the host)."""
    metrics = dict(metrics)
    for split, labels in (("train", data[1]), ("test", data[3])):
        metrics[f"{split}_acc"] = np.asarray(metrics.pop(f"{split}_correct"), np.float64) / labels.shape[0]
    return metrics


def train(name, loss_name, tx, params, data, steps, chunk, *, monitor: TrainingMonitor | None = None):
    run_chunk = make_chunk(loss_name, tx, data, chunk, monitor=monitor)
    carry, history = (params, tx.init(params)), []
    start = time.perf_counter()
    bar = progress(range(0, steps, chunk), total=-(-steps // chunk), desc=name)
    for first in bar:
        carry, metrics = run_chunk(carry, first)
        history.append(accuracies(jax.device_get(metrics), data))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(
                train=f"{history[-1]['train_acc'][-1]:.3f}", test=f"{history[-1]['test_acc'][-1]:.3f}"
            )
    curves = {k: np.concatenate([h[k] for h in history])[:steps] for k in history[0]}
    curves["seconds"] = time.perf_counter() - start
    return curves


def sweep(rates, params, data, steps, chunk):
    """⊥AdamW at several learning rates in one program: hyperparameters are traceable, so the
    optimizer state carries its own rate and `jax.vmap` trains one model per lane."""
    make = optax.inject_hyperparams(perp_adamw)
    tx = make(learning_rate=rates[0], weight_decay=0.0)
    lanes = jnp.asarray(rates, jnp.float32)
    states = jax.vmap(lambda lr: make(learning_rate=lr, weight_decay=0.0).init(params))(lanes)
    stacked = jax.tree.map(lambda p: jnp.broadcast_to(p, (len(rates), *p.shape)), params)
    run_chunk = make_chunk("softmax", tx, data, chunk)
    run_lanes = jax.jit(jax.vmap(run_chunk))
    carry, history = (stacked, states), []
    for _ in progress(range(0, steps, chunk), total=-(-steps // chunk), desc="⊥AdamW sweep"):
        carry, metrics = run_lanes(carry)
        history.append(np.asarray(metrics["test_correct"]) / data[3].shape[0])
    test_acc = np.concatenate(history, axis=1)[:, :steps]
    return {f"{lr:g}": first_step_at(acc) for lr, acc in zip(rates, test_acc, strict=True)}


def _last_finite(values: np.ndarray) -> float:
    finite = np.asarray(values)[np.isfinite(values)]
    return float(finite[-1]) if finite.size else float("nan")


def plot_panels(path, results: dict, *, lr: float, title: str, softmax_runs=None) -> None:
    """Accuracy, NLM alignment, softmax collapse and sharpness (with 2/η) against steps, one panel each.

    The collapse panel shows only `softmax_runs` (default: every run): StableMax cannot collapse."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: not writing {path}")
        return
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    (acc, nlm), (collapse, sharp) = axes
    for (name, c), color in zip(results.items(), ("C0", "C1", "C2", "C3"), strict=False):
        steps = np.arange(len(c["train_acc"]))
        acc.plot(steps, c["train_acc"], color=color, ls="--", label=f"{name} (train)")
        acc.plot(steps, c["test_acc"], color=color, label=f"{name} (test)")
        nlm.plot(steps, c["nlm_cosine"], color=color, label=name)
        if softmax_runs is None or name in softmax_runs:
            collapse.plot(steps, c["softmax_collapse"], color=color, label=name)
        probed = np.isfinite(c["sharpness"])
        sharp.plot(steps[probed], c["sharpness"][probed], "o-", color=color, ms=3, label=name)
    sharp.axhline(2 / lr, color="k", ls=":", label="2/η (GD edge of stability)")
    acc.set(ylabel="accuracy", title=title)
    nlm.set(ylabel="NLM alignment cos(-g, θ)")
    collapse.set(xlabel="step", ylabel="softmax-collapse fraction (softmax runs)")
    sharp.set(xlabel="step", ylabel="sharpness λmax (probe batch)", yscale="log")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    acc.legend(fontsize=7)
    sharp.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n\n")[0], steps=600)
    parser.add_argument("--modulus", type=int, default=113, help="p in (a + b) mod p (default: %(default)s)")
    parser.add_argument("--train-fraction", type=float, default=0.4, help="(default: %(default)s)")
    parser.add_argument(
        "--lr", type=float, default=1e-2, help="learning rate of every run (default: %(default)s)"
    )
    parser.add_argument(
        "--runs", default="baseline,perp,stablemax", help="which runs, comma-separated (default: %(default)s)"
    )
    parser.add_argument("--chunk", type=int, default=50, help="steps per jitted scan (default: %(default)s)")
    parser.add_argument(
        "--sweep-lr", type=str, default=None, help="comma-separated rates: also run a vmapped ⊥AdamW sweep"
    )
    parser.add_argument(
        "--monitor-every", type=int, default=50, help="steps between sharpness probes (default: %(default)s)"
    )
    parser.add_argument(
        "--monitor-iters", type=int, default=10, help="Lanczos steps per probe (default: %(default)s)"
    )
    parser.add_argument(
        "--probe-size", type=int, default=512, help="training pairs in the probe batch (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.runs.split(",")) - set(RUN_FLAGS.values())
    if unknown:
        parser.error(f"--runs takes {sorted(RUN_FLAGS.values())}, got {sorted(unknown)}")
    setup(args)

    split = modular_arithmetic(args.modulus, train_fraction=args.train_fraction, seed=args.seed)
    data = tuple(jnp.asarray(a) for a in split)
    print(
        f"(a + b) mod {args.modulus}: {len(split.y_train)} train / {len(split.y_test)} test pairs, full batch"
    )
    params = init_mlp(jax.random.key(args.seed), [2 * args.modulus, 200, 200, args.modulus])

    runs = {name: RUNS[name](args.lr) for name in RUNS if RUN_FLAGS[name] in args.runs.split(",")}
    monitor_options = dict(every=args.monitor_every, num_iters=args.monitor_iters, probe_size=args.probe_size)
    results = {
        name: train(
            name,
            loss,
            tx,
            params,
            data,
            args.steps,
            args.chunk,
            monitor=make_monitor(loss, data, args.lr, **monitor_options),
        )
        for name, (loss, tx) in runs.items()
    }

    summary = {}
    print(
        "\n| run | steps to 100% train | steps to 100% test | final test acc | softmax collapse (final) "
        f"| NLM cos(-g, θ) (final) | sharpness λmax final / max (2/η = {2 / args.lr:g}) | time |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, c in results.items():
        row = {
            "steps_to_train_100": first_step_at(c["train_acc"]),
            "steps_to_test_100": first_step_at(c["test_acc"]),
            "final_test_acc": float(c["test_acc"][-1]),
            # Softmax Collapse concerns the softmax loss only; StableMax cannot collapse.
            "final_softmax_collapse": float(c["softmax_collapse"][-1])
            if runs[name][0] == "softmax"
            else None,
            "final_nlm_alignment": float(c["nlm_cosine"][-1]),
            "final_sharpness": _last_finite(c["sharpness"]),
            "max_sharpness": float(np.nanmax(c["sharpness"])),
            "two_over_lr": 2 / args.lr,
            "seconds": round(c["seconds"], 1),
        }
        summary[name] = row
        fmt = lambda s: "never" if s is None else str(s)
        fmt_fraction = lambda f: "n/a" if f is None else f"{f:.2f}"
        print(
            f"| {name} | {fmt(row['steps_to_train_100'])} | {fmt(row['steps_to_test_100'])} | "
            f"{row['final_test_acc']:.4f} | {fmt_fraction(row['final_softmax_collapse'])} | "
            f"{row['final_nlm_alignment']:.2f} | {row['final_sharpness']:.3g} / {row['max_sharpness']:.3g} | "
            f"{row['seconds']:.0f} s |"
        )
    if args.sweep_lr:
        rates = [float(r) for r in args.sweep_lr.split(",")]
        summary["sweep_steps_to_test_100"] = sweep(rates, params, data, args.steps, args.chunk)
        print(
            f"\n⊥AdamW learning-rate sweep (one vmapped program), steps to 100% test: {summary['sweep_steps_to_test_100']}"
        )

    plot_panels(
        args.out / "grokking.png",
        results,
        lr=args.lr,
        title=f"(a + b) mod {args.modulus}, {args.train_fraction:.0%} train",
        softmax_runs={name for name, (loss, _) in runs.items() if loss == "softmax"},
    )
    save_json(
        args.out / "grokking.json",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "summary": summary,
            "curves": {
                name: {k: v.tolist() for k, v in c.items() if k != "seconds"} for name, c in results.items()
            },
        },
    )
    return summary


if __name__ == "__main__":
    main()
