"""Sequential digits: S4-PTD vs S4D vs S5 reading each 8x8 digit pixel by pixel (real data, offline).

scikit-learn's bundled handwritten digits (1,797 images; nothing downloads) become length-64 sequences
of one pixel each, in raster order and, for the permuted variant, in one fixed random order (the
sequential / permuted-MNIST tasks of the S4 and S5 papers at toy scale). Three SequenceModels that
differ only in their SSM layer are trained with AdamW and scored on the held-out quarter:

- S4-PTD: S4D layers initialised by perturb-then-diagonalize (Yu et al., ICLR 2024, Sec. 4);
- S4D:    S4D-LegS (Gu et al., "On the Parameterization and Initialization of Diagonal SSMs", 2022);
- S5:     the MIMO S5 layer (Smith et al., ICLR 2023), HiPPO-LegS blocks.

The baseline is multinomial logistic regression on the 64 pixels (scikit-learn; blind to pixel order,
so it scores the same on both variants). Each trained model is then run again in recurrent mode, one
pixel at a time through `layer.step` with a running mean for the pooling, and its test predictions
are compared with the convolution / scan mode's: they must agree.

    python examples/ssm_digits.py
"""

from __future__ import annotations

import time

import numpy as np
from _common import base_parser, load_digits, plot_curves, progress, save_json, setup

SMOKE_ARGS = (
    "--steps 3 --limit 200 --features 8 --state-size 8 --layers 1 --models S4-PTD --variants permuted".split()
)
MODELS = {  # name: (SequenceModel's ssm, its init)
    "S4-PTD": ("s4d", "ptd"),
    "S4D": ("s4d", "legs"),
    "S5": ("s5", "legs"),
}


def recurrent_logits(model, x):
    """The SequenceModel's logits computed token by token with `ssm.step` (causal, pooled by a running sum).

    x: (batch, length, 1). Every operation of a block other than the SSM acts on one position at a time,
    so stepping the SSMs and summing the last block's outputs gives the convolution mode's mean pooling.
    """
    import jax
    import jax.numpy as jnp

    batch, length, _ = x.shape
    features = model.encoder.out_features

    def step(carry, u_t):
        caches, total = carry
        h = model.encoder(u_t)
        new_caches = []
        for norm, ssm, glu, cache in zip(model.norms, model.ssms, model.glus, caches, strict=True):
            y, cache = ssm.step(norm(h), cache)
            z = jax.nn.glu(glu(jax.nn.gelu(y)), axis=-1)
            h = h + z if model.residual else z
            new_caches.append(cache)
        return (new_caches, total + h), None

    caches = [ssm.init_cache(batch) for ssm in model.ssms]
    (_, total), _ = jax.lax.scan(step, (caches, jnp.zeros((batch, features))), jnp.swapaxes(x, 0, 1))
    return model.decoder(total / length)


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=1500, batch_size=64)
    parser.add_argument("--limit", type=int, default=None, help="use only this many digits (smoke runs)")
    parser.add_argument("--features", type=int, default=32, help="model width H")
    parser.add_argument("--state-size", type=int, default=32, help="N (S4D) / P (S5)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--variants", nargs="+", default=["sequential", "permuted"], choices=("sequential", "permuted")
    )
    args = parser.parse_args(argv)
    setup(args)

    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from sklearn.linear_model import LogisticRegression

    from jaxdl.data import ArraySource, Loader
    from jaxdl.nn.ssm import SequenceModel

    data = load_digits(args.seed, limit=args.limit)
    permutation = np.random.default_rng(args.seed + 1).permutation(64)
    flat = {k: v.reshape(len(v), 64) for k, v in data.items() if k.startswith("x")}
    print(f"digits: {len(data['y_train'])} train / {len(data['y_test'])} test sequences of 64 pixels")

    baseline = LogisticRegression(max_iter=2000).fit(flat["x_train"], data["y_train"])
    baseline_accuracy = float(baseline.score(flat["x_test"], data["y_test"]))
    print(f"baseline: logistic regression on the 64 pixels, test accuracy {baseline_accuracy:.4f}")

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    convolution_logits = nnx.jit(lambda model, x: model(x))
    stepped_logits = nnx.jit(recurrent_logits)

    results = {"baseline_logistic_regression": baseline_accuracy, **{v: {} for v in args.variants}}
    curves = {}
    tx = optax.adamw(optax.cosine_decay_schedule(args.lr, args.steps), weight_decay=0.01)
    for name in args.models:  # the variants share shapes and optimizer, so each model compiles once
        ssm, init = MODELS[name]
        kwargs = dict(state_size=args.state_size, init=init)
        if ssm == "s5":
            kwargs["blocks"] = max(1, args.state_size // 16)
        for variant in args.variants:
            order = np.arange(64) if variant == "sequential" else permutation
            x_train = flat["x_train"][:, order, None]
            x_test = jnp.asarray(flat["x_test"][:, order, None])
            loader = Loader(
                ArraySource({"x": x_train, "y": data["y_train"]}),
                batch_size=min(args.batch_size, len(x_train)),
                seed=args.seed,
            )
            model = SequenceModel(
                1, args.features, 10, layers=args.layers, ssm=ssm, ssm_kwargs=kwargs, rngs=nnx.Rngs(args.seed)
            )
            optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
            batches, losses = loader.stream(), []
            start = time.perf_counter()
            for _ in progress(range(args.steps), total=args.steps, desc=f"{name} {variant}"):
                batch = next(batches)
                losses.append(train_step(model, optimizer, batch["x"], batch["y"]))
            losses = [float(v) for v in losses]
            seconds = time.perf_counter() - start
            logits = convolution_logits(model, x_test)
            stepped = stepped_logits(model, x_test)
            predictions = np.asarray(jnp.argmax(logits, -1))
            accuracy = float(np.mean(predictions == data["y_test"]))
            row = {
                "test_accuracy": accuracy,
                "final_loss": float(np.mean(losses[-20:])),
                "train_seconds": seconds,
                "params": sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))),
                "step_mode_agreement": float(np.mean(np.asarray(jnp.argmax(stepped, -1)) == predictions)),
                "step_mode_max_logit_diff": float(jnp.max(jnp.abs(stepped - logits))),
            }
            results[variant][name] = row
            curves[f"{name} {variant}"] = (list(range(len(losses))), losses)
            print(
                f"{variant:10s} {name:6s} test accuracy {accuracy:.4f} ({row['params']} params, "
                f"{seconds:.1f} s with compilation); step mode agrees on {row['step_mode_agreement']:.4f} of "
                f"the predictions, max |logit difference| {row['step_mode_max_logit_diff']:.1e}"
            )

    plot_curves(
        args.out / "ssm_digits.png", curves, xlabel="step", ylabel="train loss", title="sequential digits"
    )
    save_json(args.out / "ssm_digits.json", results)
    return results


if __name__ == "__main__":
    main()
