"""ListOps (Long Range Arena) with S4-PTD and S5-PTD classifiers, on offline generated data.

The expressions follow the LRA grammar (`jaxdl.data.listops`); CPU defaults use short expressions
(20-100 tokens instead of 500-2000) so that a run takes minutes. Both models are bidirectional
`SequenceModel`s; the PTD paper reports 60.65 (S4-PTD) and 62.75 (S5-PTD) on full LRA ListOps,
where chance is about 10-20%.

    python examples/ssm_listops.py --steps 1000
"""

from __future__ import annotations

import numpy as np

from examples._common import base_parser, plot_curves, progress, save_json, setup

SMOKE_ARGS = [
    "--steps",
    "3",
    "--num-train",
    "32",
    "--num-test",
    "16",
    "--features",
    "8",
    "--max-length",
    "40",
]


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=1000, batch_size=32)
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--min-length", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=100)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    setup(args)

    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxdl.data.listops import LISTOPS_VOCAB, generate_listops
    from jaxdl.nn.ssm import SequenceModel

    data = generate_listops(
        args.num_train + args.num_test, seed=args.seed, min_length=args.min_length, max_length=args.max_length
    )
    one_hot = lambda tokens: jax.nn.one_hot(tokens, len(LISTOPS_VOCAB))
    train = {k: v[: args.num_train] for k, v in data.items()}
    test = {k: v[args.num_train :] for k, v in data.items()}
    majority = float(np.mean(test["labels"] == np.bincount(train["labels"]).argmax()))

    models = {
        "S4-PTD": dict(ssm="s4d", ssm_kwargs=dict(state_size=16, init="ptd", bidirectional=True)),
        "S5-PTD": dict(ssm="s5", ssm_kwargs=dict(state_size=32, blocks=2, init="ptd", bidirectional=True)),
    }

    @nnx.jit
    def train_step(model, optimizer, tokens, labels):
        loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(one_hot(tokens)), labels).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def accuracy(model, tokens, labels):
        return jnp.mean(jnp.argmax(model(one_hot(tokens)), -1) == labels)

    rng = np.random.default_rng(args.seed)
    results, curves = {"majority_class_accuracy": majority}, {}
    for name, kwargs in models.items():
        model = SequenceModel(
            len(LISTOPS_VOCAB), args.features, 10, layers=args.layers, rngs=nnx.Rngs(args.seed), **kwargs
        )
        schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, max(1, args.steps // 10), args.steps)
        optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=0.05), wrt=nnx.Param)
        losses = []
        for _ in progress(range(args.steps), total=args.steps, desc=name):
            idx = rng.integers(0, args.num_train, args.batch_size)
            losses.append(float(train_step(model, optimizer, train["tokens"][idx], train["labels"][idx])))
        acc = float(accuracy(model, test["tokens"], test["labels"]))
        results[name] = {"test_accuracy": acc, "final_loss": float(np.mean(losses[-20:]))}
        curves[name] = (list(range(1, len(losses) + 1)), losses)
        print(f"{name}: test accuracy {acc:.3f} (majority class {majority:.3f})")

    save_json(args.out / "ssm_listops.json", results)
    plot_curves(args.out / "ssm_listops.png", curves, xlabel="step", ylabel="training loss", title="ListOps")
    return results


if __name__ == "__main__":
    main()
