"""StableMax groks with no regularisation (Prieto et al., ICLR 2025, Fig. 4); softmax collapses and dies.

The paper's MLP (226 -> 200 -> 200 -> 113, ReLU, no biases, PyTorch's default init) trained
full batch on 40% of the pairs of (a + b) mod 113 with AdamW (lr 1e-2, beta2 0.999, no weight
decay) for 100k steps. A run is named `loss/loss_dtype/adam_eps/matmul_precision`:

- `stablemax/float64/1e-25/highest` (`--runs stablemax`): the authors' configuration. Their
  StableMax loss upcasts the logits to float64, their AdamW eps is 1e-25 (their script's
  default), and PyTorch multiplies float32 matrices in full float32. It groks.
- `stablemax/float32/1e-08/default` (`stablemax-f32`): what `examples/grokking.py` runs (float32
  loss, optax's eps 1e-8, XLA's TF32 default on GPUs). It memorises and never generalises.
- `softmax/float32/1e-08/default` (`softmax`): the baseline. It fits the training set, enters
  Softmax Collapse, and dies; the per-step record says how (see the report it prints).

Both differences are needed (measured on an H200, `--runs ablation`): with eps 1e-8 the late
gradients (sqrt(nu) < eps after ~20k steps) shrink Adam's step and the weight norm stops
growing; with a float32 loss the logits pass 1e5 and the correct class's StCE gradient, formed
from 1 - p_y, is lost to rounding. The matmul precision does not matter.

    python examples/grokking_stablemax.py                    # the three runs, ~2 min on an H200
    python examples/grokking_stablemax.py --runs ablation,softmax
    python examples/grokking_stablemax.py --steps 2000 --runs stablemax   # CPU: the start only

Writes grokking_stablemax.png (accuracy, weight norm, collapse), grokking_stablemax.json (summary
and curves every 100 steps) and grokking_stablemax.npz (every record; every step of softmax runs).
"""

from __future__ import annotations

import itertools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import base_parser, progress, save_json, setup
from grokking import init_mlp

from jaxdl.data.modular import modular_arithmetic
from jaxdl.losses import softmax_collapse_fraction, stablemax_cross_entropy
from jaxdl.optim import nlm_alignment

SMOKE_ARGS = [
    "--steps",
    "40",
    "--modulus",
    "11",
    "--chunk",
    "20",
    "--log-every",
    "5",
    "--runs",
    "stablemax,softmax",
]


class Config(NamedTuple):
    loss: str  # "stablemax" or "softmax"
    loss_dtype: str  # "float32" or "float64"
    eps: float  # AdamW's eps
    precision: str  # matmul precision: "default" (TF32 on recent GPUs) or "highest"

    @property
    def name(self) -> str:
        return f"{self.loss}/{self.loss_dtype}/{self.eps:g}/{self.precision}"


def parse_run(spec: str) -> Config:
    loss, dtype, eps, precision = spec.split("/")
    if loss not in ("stablemax", "softmax") or dtype not in ("float32", "float64"):
        raise ValueError(f"run must be stablemax|softmax/float32|float64/EPS/PRECISION, got {spec!r}")
    if precision not in ("default", "highest"):
        raise ValueError(f"precision must be default or highest, got {precision!r}")
    return Config(loss, dtype, float(eps), precision)


AUTHORS = "stablemax/float64/1e-25/highest"
SHORTCUTS = {
    "stablemax": [AUTHORS],
    "stablemax-f32": ["stablemax/float32/1e-08/default"],
    "softmax": ["softmax/float32/1e-08/default"],
    "ablation": [
        f"stablemax/{d}/{e}/{p}"
        for d, e, p in itertools.product(("float64", "float32"), ("1e-25", "1e-08"), ("highest", "default"))
    ],
}


def forward(params, pairs, precision):
    """The MLP on one-hot(a) ++ one-hot(b). The first layer is a gather: one_hot @ W1 picks
    rows exactly. Returns the logits and the two hidden ReLU activations."""
    modulus = params[0].shape[0] // 2
    h1 = jax.nn.relu(params[0][pairs[:, 0]] + params[0][modulus + pairs[:, 1]])
    h2 = jax.nn.relu(jnp.dot(h1, params[1], precision=precision))
    return jnp.dot(h2, params[2], precision=precision), (h1, h2)


def per_example_loss(config: Config, logits, labels):
    if config.loss == "stablemax":
        return stablemax_cross_entropy(logits, labels, dtype=jnp.dtype(config.loss_dtype))
    if config.loss_dtype == "float64":
        raise ValueError("the softmax runs compute their loss in float32")
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _rms(tree) -> jax.Array:
    scale = jnp.maximum(optax.tree.norm(tree, ord=jnp.inf), jnp.finfo(jnp.float32).tiny)
    size = sum(v.size for v in jax.tree.leaves(tree))
    return scale * jnp.sqrt(optax.tree.norm(jax.tree.map(lambda v: v / scale, tree), squared=True) / size)


def make_chunk(config: Config, data, lr: float, log_every: int, records: int):
    """`records * log_every` full-batch steps in one jitted program (nested lax.scan).

    Every step yields the cheap metrics (loss, train accuracy, the Adam step's size, dead
    ReLUs, rows with zero loss, Softmax Collapse); every `log_every` steps the expensive ones
    (test accuracy, weight norm, Adam's second moment, NLM cosine, float32 vs float64 loss
    gradient). Metrics describe the parameters going into the step."""
    x_train, y_train, x_test, y_test = data
    precision = jax.lax.Precision.HIGHEST if config.precision == "highest" else None
    tx = optax.adamw(lr, b1=0.9, b2=0.999, eps=config.eps, weight_decay=0.0)

    def objective(params):
        logits, hidden = forward(params, x_train, precision)
        losses = per_example_loss(config, logits, y_train)
        return jnp.mean(losses), (logits, hidden, losses)

    def step(carry, _):
        params, opt_state = carry
        (value, (logits, hidden, losses)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        size = sum(p.size for p in jax.tree.leaves(params))
        metrics = {
            "loss": value,
            "train_correct": jnp.sum(jnp.argmax(logits, -1) == y_train),
            # RMS of the Adam step in units of lr: <= ~1 in steady state; a spike after a
            # stretch of near-zero gradients (v decays, then g returns) goes up to ~3.2.
            "step_rms_over_lr": optax.tree.norm(updates) / jnp.sqrt(size) / lr,
            "grad_norm": optax.tree.norm(grads),
            "dead_units": jnp.mean(jnp.concatenate([jnp.all(h == 0, axis=0) for h in hidden])),
            "zero_loss_rows": jnp.mean(losses == 0),
            "softmax_collapse": softmax_collapse_fraction(logits),
        }
        return (optax.apply_updates(params, updates), opt_state), metrics

    def logit_grad_error(logits):
        """||dL/dz of the float32 loss - dL/dz of the float64 loss|| / ||the float64 one||."""
        g32 = jax.grad(
            lambda z: jnp.sum(per_example_loss(config._replace(loss_dtype="float32"), z, y_train))
        )(logits)
        with jax.enable_x64(True):
            loss64 = (
                stablemax_cross_entropy
                if config.loss == "stablemax"
                else optax.softmax_cross_entropy_with_integer_labels
            )
            g64 = jax.grad(lambda z: jnp.sum(loss64(z, y_train)))(logits.astype(jnp.float64))
            return (jnp.linalg.norm(g32.astype(jnp.float64) - g64) / jnp.linalg.norm(g64)).astype(jnp.float32)

    def record(carry, _):
        params, opt_state = carry
        logits, _ = forward(params, x_train, precision)
        grads = jax.grad(lambda p: objective(p)[0])(params)
        nu = optax.tree.get(opt_state, "nu")
        size = sum(p.size for p in jax.tree.leaves(params))
        slow = {
            "test_correct": jnp.sum(jnp.argmax(forward(params, x_test, precision)[0], -1) == y_test),
            "weight_norm": optax.tree.norm(params),
            "max_abs_logit": jnp.max(jnp.abs(logits)),
            # RMS of Adam's second moment (scaled first: nu**2 underflows float32 late on), and
            # the share of weights whose sqrt(nu) is below eps, where eps sets Adam's step size.
            "adam_nu_rms": _rms(nu),
            "adam_eps_dominated": sum(jnp.sum(jnp.sqrt(v) < config.eps) for v in jax.tree.leaves(nu)) / size,
            "nlm_cosine": nlm_alignment(grads, params).overall,
            "logit_grad_f32_vs_f64": logit_grad_error(logits),
        }
        carry, fast = jax.lax.scan(step, carry, length=log_every)
        return carry, (fast, slow)

    return tx, jax.jit(lambda carry: jax.lax.scan(record, carry, length=records))


def load_init(path: str, modulus: int):
    """Train/test split and initial weights exported from the authors' PyTorch run (indices into
    the p*p pairs in a-major order, and the three nn.Linear weights, (out, in))."""
    saved = np.load(path)
    a, b = np.divmod(np.arange(modulus * modulus), modulus)
    pairs = np.stack([a, b], 1).astype(np.int32)
    labels = ((a + b) % modulus).astype(np.int32)
    train, test = saved["train_indices"], saved["test_indices"]
    split = (pairs[train], labels[train], pairs[test], labels[test])
    params = [jnp.asarray(saved[f"w{i}"].T, jnp.float32) for i in range(3)]
    return split, params


def train(config: Config, params, data, steps: int, lr: float, log_every: int, chunk: int):
    records = chunk // log_every
    tx, run_chunk = make_chunk(config, data, lr, log_every, records)
    carry, fast, slow = (params, tx.init(params)), [], []
    start = time.perf_counter()
    first = None
    for _ in progress(range(0, steps, chunk), total=-(-steps // chunk), desc=config.name):
        carry, (f, s) = run_chunk(carry)
        f, s = jax.device_get((f, s))
        first = first or time.perf_counter() - start
        fast.append({k: v.reshape(-1) for k, v in f.items()})
        slow.append(s)
    n_train, n_test = data[1].shape[0], data[3].shape[0]
    fast = {k: np.concatenate([c[k] for c in fast])[:steps] for k in fast[0]}
    slow = {k: np.concatenate([c[k] for c in slow])[: -(-steps // log_every)] for k in slow[0]}
    fast["train_acc"] = fast.pop("train_correct").astype(np.float64) / n_train
    slow["test_acc"] = slow.pop("test_correct").astype(np.float64) / n_test
    seconds = time.perf_counter() - start
    return fast, slow, {"seconds": round(seconds, 1), "first_chunk_seconds": round(first, 1)}


def first_at(values: np.ndarray, predicate) -> int | None:
    hits = np.flatnonzero(predicate(values))
    return int(hits[0]) if hits.size else None


def summarise(config: Config, fast, slow, log_every: int) -> dict:
    """Headline numbers; for softmax runs, the collapse and what followed it."""
    at = lambda i, every=1: None if i is None else i * every
    grok = first_at(slow["test_acc"], lambda a: a >= 1.0)
    row = {
        "steps_to_train_100": first_at(fast["train_acc"], lambda a: a >= 1.0),
        "steps_to_test_100": at(grok, log_every),
        **{
            f"steps_to_test_{int(t * 100)}": at(first_at(slow["test_acc"], lambda a, t=t: a >= t), log_every)
            for t in (0.5, 0.9, 0.99)
        },
        "final_test_acc": float(slow["test_acc"][-1]),
        "max_test_acc": float(slow["test_acc"].max()),
        "weight_norm_start": float(slow["weight_norm"][0]),
        "weight_norm_at_test_100": None if grok is None else float(slow["weight_norm"][grok]),
        "weight_norm_final": float(slow["weight_norm"][-1]),
        "max_abs_logit_final": float(slow["max_abs_logit"][-1]),
        "logit_grad_f32_vs_f64_final": float(slow["logit_grad_f32_vs_f64"][-1]),
        "first_step_zero_loss_row": first_at(fast["zero_loss_rows"], lambda z: z > 0),
        "max_zero_loss_rows": float(fast["zero_loss_rows"].max()),
        "final_dead_units": float(fast["dead_units"][-1]),
        "max_step_rms_over_lr": float(fast["step_rms_over_lr"].max()),
    }
    if config.loss == "softmax":
        train_100 = row["steps_to_train_100"] or 0
        lost = first_at(fast["train_acc"][train_100:], lambda a: a < 0.5)
        death = None if lost is None else train_100 + lost
        row.update(
            {
                "max_softmax_collapse": float(fast["softmax_collapse"].max()),
                "step_max_softmax_collapse": int(np.argmax(fast["softmax_collapse"])),
                "first_step_loss_exactly_0": first_at(fast["loss"], lambda v: v == 0),
                "step_train_acc_below_50_after_100": death,
            }
        )
        if death is not None:
            window = slice(max(death - 200, 0), death + 1)
            spike = window.start + int(np.argmax(fast["step_rms_over_lr"][window]))
            row.update(
                {
                    "step_of_largest_adam_step_before_death": spike,
                    "largest_adam_step_rms_over_lr": float(fast["step_rms_over_lr"][spike]),
                    "grad_norm_200_steps_before": float(fast["grad_norm"][window.start]),
                    "dead_units_before": float(fast["dead_units"][window.start]),
                    "dead_units_after": float(
                        fast["dead_units"][min(death + 100, len(fast["dead_units"]) - 1)]
                    ),
                    "loss_after": float(fast["loss"][min(death + 100, len(fast["loss"]) - 1)]),
                }
            )
    return row


def plot(path, results: dict, log_every: int, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: not writing {path}")
        return
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    for name, (fast, slow) in results.items():
        steps = np.arange(len(slow["test_acc"])) * log_every
        (line,) = axes[0].plot(steps, slow["test_acc"], label=f"{name} test")
        axes[0].plot(np.arange(len(fast["train_acc"])), fast["train_acc"], ":", color=line.get_color())
        axes[1].plot(steps, slow["weight_norm"], color=line.get_color(), label=name)
        if name.startswith("softmax"):
            axes[2].plot(
                np.arange(len(fast["softmax_collapse"])), fast["softmax_collapse"], label=f"{name}: SC rows"
            )
            axes[2].plot(np.arange(len(fast["dead_units"])), fast["dead_units"], label=f"{name}: dead ReLUs")
        else:
            axes[2].plot(
                np.arange(len(fast["zero_loss_rows"])),
                fast["zero_loss_rows"],
                label=f"{name}: zero-loss rows",
            )
    axes[0].set(xlabel="step", ylabel="accuracy (dotted: train)", title=title)
    axes[1].set(xlabel="step", ylabel="weight norm ||θ||", yscale="log", title="weight norm")
    axes[2].set(xlabel="step", ylabel="fraction", title="Softmax Collapse and dead ReLUs")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def report(summary: dict, modulus: int) -> None:
    print(
        "\n| run | steps to 100% train | steps to 100% test | final test acc | ||θ|| start → final | time |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    fmt = lambda s: "never" if s is None else str(s)
    for name, row in summary.items():
        print(
            f"| {name} | {fmt(row['steps_to_train_100'])} | {fmt(row['steps_to_test_100'])} | "
            f"{row['final_test_acc']:.4f} | {row['weight_norm_start']:.1f} → {row['weight_norm_final']:.1f} | "
            f"{row['seconds']:.0f} s |"
        )
    for name, row in summary.items():
        if "step_train_acc_below_50_after_100" not in row:
            continue
        print(f"\n{name}: Softmax Collapse and after")
        print(
            f"  loss exactly 0 first at step {fmt(row['first_step_loss_exactly_0'])}; at most "
            f"{row['max_softmax_collapse']:.0%} of the training rows in Softmax Collapse "
            f"(step {row['step_max_softmax_collapse']})"
        )
        death = row["step_train_acc_below_50_after_100"]
        if death is None:
            print("  train accuracy never fell below 50% after reaching 100%")
            continue
        print(
            f"  train accuracy fell below 50% at step {death}; the largest Adam step in the 200 "
            f"steps before was {row['largest_adam_step_rms_over_lr']:.2f} × lr (RMS) at step "
            f"{row['step_of_largest_adam_step_before_death']}; dead ReLUs "
            f"{row['dead_units_before']:.0%} → {row['dead_units_after']:.0%}; loss 100 steps "
            f"later {row['loss_after']:.3f} (log p = {np.log(modulus):.3f})"
        )


def write_outputs(args, results: dict, summary: dict) -> None:
    title = (
        f"(a + b) mod {args.modulus}, {args.train_fraction:.0%} train, AdamW lr {args.lr:g}, no weight decay"
    )
    plot(args.out / "grokking_stablemax.png", results, args.log_every, title)
    every = max(1, 100 // args.log_every)
    save_json(
        args.out / "grokking_stablemax.json",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "device": str(jax.devices()[0].device_kind),
            "jax": jax.__version__,
            "summary": summary,
            "curves_every_100_steps": {
                name: {
                    "step": (np.arange(len(slow["test_acc"])) * args.log_every)[::every].tolist(),
                    **{k: v[::every].tolist() for k, v in slow.items()},
                    **{k: v[:: every * args.log_every].tolist() for k, v in fast.items()},
                }
                for name, (fast, slow) in results.items()
            },
        },
    )
    arrays = {}
    for name, (fast, slow) in results.items():
        arrays |= {f"{name}|slow|{k}": v.astype(np.float32) for k, v in slow.items()}
        keep = fast if name.startswith("softmax") else {k: v[:: args.log_every] for k, v in fast.items()}
        arrays |= {f"{name}|fast|{k}": v.astype(np.float32) for k, v in keep.items()}
    np.savez_compressed(args.out / "grokking_stablemax.npz", **arrays)


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n\n")[0], steps=100_000)
    parser.add_argument("--modulus", type=int, default=113, help="p in (a + b) mod p (default: %(default)s)")
    parser.add_argument("--train-fraction", type=float, default=0.4, help="(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument(
        "--runs",
        default="stablemax,stablemax-f32,softmax",
        help=f"comma-separated: loss/dtype/eps/precision specs or {sorted(SHORTCUTS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--chunk", type=int, default=5000, help="steps per jitted program (default: %(default)s)"
    )
    parser.add_argument(
        "--log-every", type=int, default=10, help="steps between slow metrics (default: %(default)s)"
    )
    parser.add_argument(
        "--init-from", default=None, help="npz of a split and initial weights (from the authors' code)"
    )
    args = parser.parse_args(argv)
    if args.chunk % args.log_every or args.steps % args.chunk and args.steps > args.chunk:
        parser.error("--chunk must be a multiple of --log-every, and --steps of --chunk")
    args.chunk = min(args.chunk, args.steps)
    specs = [s for token in args.runs.split(",") for s in SHORTCUTS.get(token, [token])]
    configs = [parse_run(s) for s in specs]
    setup(args)

    if args.init_from:
        split, params = load_init(args.init_from, args.modulus)
    else:
        split = modular_arithmetic(args.modulus, train_fraction=args.train_fraction, seed=args.seed)
        params = init_mlp(jax.random.key(args.seed), [2 * args.modulus, 200, 200, args.modulus])
    data = tuple(jnp.asarray(a) for a in split)
    print(f"(a + b) mod {args.modulus}: {len(split[1])} train / {len(split[3])} test pairs, full batch")

    results, summary = {}, {}
    for config in configs:
        fast, slow, timing = train(config, params, data, args.steps, args.lr, args.log_every, args.chunk)
        results[config.name] = (fast, slow)
        summary[config.name] = summarise(config, fast, slow, args.log_every) | timing
        print(config.name, summary[config.name], flush=True)
        write_outputs(args, results, summary)  # after every run: a long job keeps what it finished
    report(summary, args.modulus)
    return summary


if __name__ == "__main__":
    main()
