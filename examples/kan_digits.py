"""KAN and KAT-MLP vs an MLP of equal parameter count on the 8x8 digits (real data, offline).

scikit-learn's bundled handwritten digits (1,797 images, 64 pixels; nothing downloads), a quarter held
out per class. Three classifiers of (nearly) the same number of parameters, trained alike (AdamW,
cosine schedule, the same batches from one `jaxdl.data.Loader`):

- KAN [64, H, 10] with cubic B-splines on a grid of G = 5 and a SiLU base branch (Liu et al., "KAN", 2024);
- KAT-MLP 64 -> H' -> 10: GR-KAN(identity init) then GR-KAN(swish init) with 8 rational groups
  (Yang & Wang, "Kolmogorov-Arnold Transformer", ICLR 2025, Sec. 4);
- MLP 64 -> H'' -> 10 with SiLU, the baseline: H'' is chosen so that its parameter count matches the
  KAN's, and so is H'.

Printed: parameters, test accuracy, compile time of the first step and steady training time per step.

    python examples/kan_digits.py
"""

from __future__ import annotations

import time

from _common import base_parser, load_digits, plot_curves, progress, save_json, setup

SMOKE_ARGS = "--steps 3 --limit 200 --kan-hidden 4 --models MLP".split()


def build(name: str, width: int, seed: int):
    import jax
    from flax import nnx

    from jaxdl.nn.kan import KAN, KATMLP

    rngs = nnx.Rngs(seed)
    if name == "KAN":
        return KAN([64, width, 10], grid_size=5, spline_order=3, rngs=rngs)
    if name == "KAT-MLP":
        return KATMLP(64, width, 10, groups=8, rngs=rngs)
    if name == "MLP":
        return nnx.Sequential(nnx.Linear(64, width, rngs=rngs), jax.nn.silu, nnx.Linear(width, 10, rngs=rngs))
    raise ValueError(f"unknown model {name!r}")


def count(model) -> int:
    import jax
    from flax import nnx

    return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


def count_at(name: str, width: int) -> int:
    """Parameters of ``build(name, width)``, from shapes only (nothing is initialised)."""
    from flax import nnx

    return count(nnx.eval_shape(lambda: build(name, width, 0)))


def matching_width(name: str, target: int, step: int) -> int:
    """The hidden width (a multiple of ``step``) whose parameter count is closest to ``target``.

    Both models' counts are affine in the width (a + b w), so two shape-only builds find it.
    """
    a = count_at(name, step)
    b = (count_at(name, 2 * step) - a) / step
    width = max(step, int(round((target - a) / b / step + 1)) * step)
    return min(
        (width - step, width, width + step), key=lambda w: abs(count_at(name, w) - target) if w else target
    )


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=2000, batch_size=64)
    parser.add_argument("--limit", type=int, default=None, help="use only this many digits (smoke runs)")
    parser.add_argument("--kan-hidden", type=int, default=16, help="H of the KAN; the others match its size")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--models", nargs="+", default=["KAN", "KAT-MLP", "MLP"], choices=("KAN", "KAT-MLP", "MLP")
    )
    args = parser.parse_args(argv)
    setup(args)

    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxdl.data import ArraySource, Loader

    data = load_digits(args.seed, limit=args.limit)
    x_train = 2.0 * data["x_train"].reshape(-1, 64) - 1.0  # [-1, 1], the KAN grid's range
    x_test = jnp.asarray(2.0 * data["x_test"].reshape(-1, 64) - 1.0)
    print(f"digits: {len(x_train)} train / {len(x_test)} test images of 8x8 pixels")

    target = count_at("KAN", args.kan_hidden)
    widths = {
        "KAN": args.kan_hidden,
        "KAT-MLP": matching_width("KAT-MLP", target, 8),  # GR-KAN groups divide the width
        "MLP": matching_width("MLP", target, 1),
    }
    loader = Loader(
        ArraySource({"x": x_train, "y": data["y_train"]}),
        batch_size=min(args.batch_size, len(x_train)),
        seed=args.seed,
    )
    tx = optax.adamw(optax.cosine_decay_schedule(args.lr, args.steps), weight_decay=1e-4)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def accuracy(model, x, y):
        return jnp.mean(jnp.argmax(model(x), -1) == y)

    results = {
        "widths": widths,
        "params": {name: count_at(name, w) for name, w in widths.items()},
        "trained": {},
    }
    curves = {}
    for name in args.models:
        width = widths[name]
        model = build(name, width, args.seed)
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        batches, losses = loader.stream(), []
        start = time.perf_counter()
        batch = next(batches)
        losses.append(float(train_step(model, optimizer, batch["x"], batch["y"])))  # compiles
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in progress(range(args.steps - 1), total=args.steps - 1, desc=name):
            batch = next(batches)
            losses.append(train_step(model, optimizer, batch["x"], batch["y"]))
        losses = [float(v) for v in losses]  # waits for the last step
        steady = (time.perf_counter() - start) / max(args.steps - 1, 1)
        row = {
            "hidden": width,
            "params": count(model),
            "test_accuracy": float(accuracy(model, x_test, data["y_test"])),
            "train_accuracy": float(accuracy(model, jnp.asarray(x_train), data["y_train"])),
            "first_step_seconds": first,
            "ms_per_step": 1e3 * steady,
        }
        results["trained"][name] = row
        curves[name] = (list(range(len(losses))), losses)
        print(
            f"{name:8s} hidden {width:3d}  {row['params']:6d} params  test accuracy {row['test_accuracy']:.4f}  "
            f"(train {row['train_accuracy']:.4f}); first step {first:.1f} s, then {row['ms_per_step']:.2f} ms/step"
        )

    plot_curves(args.out / "kan_digits.png", curves, xlabel="step", ylabel="train loss", title="8x8 digits")
    save_json(args.out / "kan_digits.json", results)
    return results


if __name__ == "__main__":
    main()
