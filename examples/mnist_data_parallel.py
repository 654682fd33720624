"""Data-parallel image classification over every device: tfds data, sharded jit (or pmap), orbax checkpoints.

An MLP (Flax NNX) trained on MNIST / Fashion-MNIST / CIFAR-10 read with `tfds.data_source` (no
TensorFlow), each batch split across all devices by `jaxdl.parallel`, checkpointed every few steps by
`jaxdl.checkpoint` (async) and resumable with --resume. Without prepared tfds data it trains on an
announced synthetic stand-in of the same shapes.

    python examples/mnist_data_parallel.py --dataset fashion_mnist --optimizer diffgrad
    python examples/mnist_data_parallel.py --steps 4000 --resume   # continues from out/checkpoints

Multi-host: run the same command on every host after `jax.distributed.initialize()` (see
jaxdl/parallel.py); each process reads its own rows of every global batch.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import optax
from _common import base_parser, plot_curves, progress, save_json, setup
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdl.optim
from jaxdl.checkpoint import Checkpointer
from jaxdl.data import Loader, image_classification, normalize_images
from jaxdl.parallel import (
    create_train_state,
    data_mesh,
    data_parallel,
    data_parallel_pmap,
    replicate,
    replicate_for_pmap,
    shard_batch,
    split_for_pmap,
    train_step,
    unreplicate,
)

OPTIMIZERS = {
    "adam": optax.adam,
    "sgd": lambda lr: optax.sgd(lr, momentum=0.9),
    "diffgrad": jaxdl.optim.diffgrad,
    "lamb": jaxdl.optim.lamb,
    "perp_adamw": jaxdl.optim.perp_adamw,
}
SMOKE_ARGS = [
    "--steps",
    "12",
    "--batch-size",
    "32",
    "--hidden",
    "32",
    "--eval-batches",
    "2",
    "--checkpoint-every",
    "5",
]


class MLP(nnx.Module):
    def __init__(self, in_features: int, hidden: int, num_classes: int, *, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(in_features, hidden, rngs=rngs)
        self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, images):
        x = normalize_images(images).reshape(images.shape[0], -1)
        x = jax.nn.relu(self.hidden1(x))
        x = jax.nn.relu(self.hidden2(x))
        return self.out(x)


def parse(argv):
    parser = base_parser(__doc__.splitlines()[0], steps=1500, batch_size=128)
    parser.add_argument("--dataset", default="mnist", help="tfds image dataset (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="tfds data folder (default: tfds's)")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--eval-batches", type=int, default=20, help="test batches to evaluate")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument(
        "--pmap", action="store_true", help="run the step through jax.pmap instead of sharded jit"
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    setup(args)
    train_source, info = image_classification(args.dataset, "train", data_dir=args.data_dir, seed=args.seed)
    test_source, _ = image_classification(args.dataset, "test", data_dir=args.data_dir, seed=args.seed)
    num_devices = jax.local_device_count()
    if args.batch_size % num_devices:
        raise ValueError(
            f"--batch-size {args.batch_size} must be divisible by the {num_devices} local devices"
        )

    in_features = int(np.prod(info.image_shape))
    graphdef, params = nnx.split(MLP(in_features, args.hidden, info.num_classes, rngs=nnx.Rngs(args.seed)))
    optimizer = OPTIMIZERS[args.optimizer](args.lr)

    def loss_fn(params, batch, key):
        logits = nnx.merge(graphdef, params)(batch["image"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}

    def make_state():
        return create_train_state(params, optimizer, jax.random.key(args.seed))

    mesh = data_mesh()
    state = make_state()
    checkpoints = Checkpointer(args.out / "checkpoints", max_to_keep=2, async_save=True)
    if args.resume and checkpoints.latest_step() is not None:
        state = checkpoints.restore(jax.eval_shape(make_state))
        print(f"resumed from step {int(state.step)}")
    start = int(state.step)

    if args.pmap:
        step = data_parallel_pmap(train_step(loss_fn, optimizer, axis_name="data", has_aux=True))
        state = replicate_for_pmap(state, num_devices)
        place, host_state = (lambda b: split_for_pmap(b, num_devices)), unreplicate
    else:
        step = data_parallel(train_step(loss_fn, optimizer, has_aux=True), mesh)
        state = replicate(state, mesh)
        place, host_state = (lambda b: shard_batch(b, mesh)), (lambda s: s)

    loader = Loader(train_source, batch_size=args.batch_size, seed=args.seed)
    batches = loader.stream(start_step=start)
    history, started = [], time.perf_counter()
    for i in progress(range(start, args.steps), total=args.steps - start, desc="train"):
        state, metrics = step(state, place(next(batches)))
        if (i + 1) % 10 == 0 or i + 1 == args.steps:
            history.append((i + 1, float(np.asarray(metrics["loss"]).ravel()[0])))
        if (i + 1) % args.checkpoint_every == 0 or i + 1 == args.steps:
            checkpoints.save(i + 1, host_state(state))
    seconds = time.perf_counter() - started
    checkpoints.close()

    final = host_state(state)

    @jax.jit
    def correct(params, batch):
        logits = nnx.merge(graphdef, params)(batch["image"])
        return (logits.argmax(-1) == batch["label"]).sum()

    test_loader = Loader(test_source, batch_size=args.batch_size, shuffle=False)
    eval_batches = min(args.eval_batches, len(test_loader))
    replicated_params = jax.device_put(final.params, NamedSharding(mesh, P()))
    with jax.set_mesh(mesh):
        hits = sum(
            int(correct(replicated_params, shard_batch(test_loader.batch(0, b), mesh)))
            for b in range(eval_batches)
        )
    test_accuracy = hits / (eval_batches * args.batch_size)

    results = {
        "dataset": args.dataset,
        "synthetic_data": info.synthetic,
        "optimizer": args.optimizer,
        "devices": jax.device_count(),
        "mode": "pmap" if args.pmap else "sharded jit",
        "steps": args.steps,
        "final_train_loss": history[-1][1] if history else None,
        "test_accuracy": test_accuracy,
        "steps_per_second": (args.steps - start) / seconds if args.steps > start else None,
        "loss_curve": history,
    }
    print(
        f"{args.dataset}{' (SYNTHETIC)' if info.synthetic else ''}: test accuracy {test_accuracy:.4f} after "
        f"{args.steps} steps on {jax.device_count()} device(s)"
    )
    save_json(args.out / "mnist_data_parallel.json", results)
    if history:
        steps_seen, losses = zip(*history, strict=True)
        plot_curves(
            args.out / "mnist_data_parallel.png",
            {args.optimizer: (steps_seen, losses)},
            xlabel="step",
            ylabel="train loss",
            title=f"{args.dataset}{' (synthetic stand-in)' if info.synthetic else ''}, {jax.device_count()} device(s)",
        )
    return results


if __name__ == "__main__":
    main()
