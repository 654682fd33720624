"""KAN and GR-KAN classifiers on MNIST (or Fashion-MNIST) read with `tfds.data_source` (no TensorFlow).

Models (efficient-kan's MNIST example and KAT's GR-KAN, reference kan.md Sec. 2 and 6):
- kan:   KAN [784, 64, 10], B-spline G=5, k=3, SiLU base (about 0.46M parameters);
- grkan: GR-KAN 784 -> 256 (identity init) -> 10 (swish init), 8 groups (about 0.20M parameters);
- afkan: AF-KAN [784, 64, 10] in the paper's best configuration (G=3, k=3, SiLU, quad1);
- mlp:   784 -> 256 -> 10 with SiLU, for reference.
Inputs are scaled to [-1, 1]; AdamW (lr 1e-3, weight decay 1e-4). Without prepared tfds data it trains on an
announced synthetic stand-in of the same shapes (see jaxdl.data.tfds).

    python examples/kan_mnist.py --dataset fashion_mnist --models kan grkan mlp
"""

from __future__ import annotations

import time

from _common import base_parser, plot_curves, progress, save_json, setup

SMOKE_ARGS: list[str] = ["--steps", "3", "--batch-size", "8", "--eval-examples", "16", "--models", "grkan"]


def build_model(name: str, num_inputs: int, num_classes: int, seed: int):
    import jax
    from flax import nnx

    from jaxdl.nn.kan import AFKAN, GRKAN, KAN

    rngs = nnx.Rngs(seed)
    if name == "kan":
        return KAN([num_inputs, 64, num_classes], grid_size=5, spline_order=3, rngs=rngs)
    if name == "grkan":
        return nnx.Sequential(
            GRKAN(num_inputs, 256, init="identity", rngs=rngs),
            GRKAN(256, num_classes, init="swish", rngs=rngs),
        )
    if name == "afkan":
        return nnx.Sequential(AFKAN(num_inputs, 64, rngs=rngs), AFKAN(64, num_classes, rngs=rngs))
    if name == "mlp":
        return nnx.Sequential(
            nnx.Linear(num_inputs, 256, rngs=rngs), jax.nn.silu, nnx.Linear(256, num_classes, rngs=rngs)
        )
    raise ValueError(f"unknown model {name!r}")


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=3000, batch_size=64)
    parser.add_argument("--dataset", default="mnist", help="tfds image dataset: mnist, fashion_mnist, kmnist")
    parser.add_argument("--data-dir", default=None, help="tfds data folder (default: tfds's)")
    parser.add_argument(
        "--models", nargs="+", default=["kan", "grkan"], choices=("kan", "grkan", "afkan", "mlp")
    )
    parser.add_argument("--eval-examples", type=int, default=10_000, help="test examples to score")
    args = parser.parse_args(argv)
    setup(args)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from jaxdl.data.tfds import Loader, image_classification, normalize_images

    train_source, info = image_classification(args.dataset, "train", data_dir=args.data_dir, seed=args.seed)
    test_source, _ = image_classification(args.dataset, "test", data_dir=args.data_dir, seed=args.seed)
    num_inputs = int(np.prod(info.image_shape))
    eval_size = min(args.eval_examples, len(test_source))
    test_batch = next(Loader(test_source, batch_size=eval_size, shuffle=False).epoch(0))

    def inputs(images):
        return 2.0 * normalize_images(images).reshape(images.shape[0], -1) - 1.0

    results = {"dataset": args.dataset, "synthetic": info.synthetic, "models": {}}
    curves = {}
    for name in args.models:
        model = build_model(name, num_inputs, info.num_classes, args.seed)
        optimizer = nnx.Optimizer(model, optax.adamw(1e-3, weight_decay=1e-4), wrt=nnx.Param)
        num_params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))

        @nnx.jit
        def train_step(model, optimizer, images, labels):
            def loss_fn(model):
                logits = model(inputs(images))
                return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        @nnx.jit
        def accuracy(model, images, labels):
            return jnp.mean(jnp.argmax(model(inputs(images)), -1) == labels)

        loader = Loader(train_source, batch_size=args.batch_size, seed=args.seed)
        batches = loader.stream()
        steps, losses = [], []
        start = time.perf_counter()
        for step in progress(range(args.steps), total=args.steps, desc=name):
            batch = next(batches)
            loss = train_step(model, optimizer, jnp.asarray(batch["image"]), jnp.asarray(batch["label"]))
            if step % max(1, args.steps // 50) == 0 or step == args.steps - 1:
                steps.append(step)
                losses.append(float(loss))
        seconds = time.perf_counter() - start
        test_accuracy = float(
            accuracy(model, jnp.asarray(test_batch["image"]), jnp.asarray(test_batch["label"]))
        )
        results["models"][name] = {
            "params": num_params,
            "test_accuracy": test_accuracy,
            "train_seconds": seconds,
        }
        curves[name] = (steps, losses)
        print(f"{name:6s} {num_params:8d} params  test accuracy {test_accuracy:.4f}  ({seconds:.1f} s)")

    plot_curves(args.out / "kan_mnist.png", curves, xlabel="step", ylabel="train loss", title=args.dataset)
    save_json(args.out / "kan_mnist.json", results)
    return results


if __name__ == "__main__":
    main()
