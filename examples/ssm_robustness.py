"""Robustness of S4D-LegS vs S4-PTD to Fourier-mode input noise (Yu et al., ICLR 2024, Sec. 5 / Fig. 3).

S4D-LegS converges to HiPPO-LegS only weakly: its transfer function has a spike near omega = N^2/pi
(325.9 for N = 32), while the perturb-then-diagonalize (PTD) system stays uniformly close to HiPPO.
We train both on sequential oriented gratings (an offline stand-in for sCIFAR) with the authors'
robustness setup (no residual, frozen Lambda, B and step Delta, no D term; only C and the dense
layers learn), then add a*cos(325.4 t) to every test input, t = k Delta, and plot accuracy against a.

    python examples/ssm_robustness.py --steps 600
"""

from __future__ import annotations

import numpy as np

from examples._common import base_parser, plot_curves, progress, save_json, setup

SMOKE_ARGS = "--steps 3 --num-train 64 --num-test 32 --size 8 --features 8 --state-size 8".split()
NOISE_FREQUENCY = 325.4  # the S4D-LegS spike for N = 32 used by the authors (reference §4)
AMPLITUDES = (0.0, 0.1, 0.3, 1.0, 3.0)


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=600, batch_size=64)
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--size", type=int, default=16, help="image side; sequence length size^2")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--state-size", type=int, default=32, help="N; the spike sits at N^2/pi")
    parser.add_argument("--step", type=float, default=0.005, help="frozen Delta of every channel")
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    setup(args)

    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxdl.data.gratings import oriented_gratings
    from jaxdl.nn.ssm import SequenceModel

    train = oriented_gratings(args.num_train, size=args.size, seed=args.seed)
    test = oriented_gratings(args.num_test, size=args.size, seed=args.seed + 1)
    L = args.size**2
    t = np.arange(L) * args.step
    fourier_mode = jnp.asarray(np.cos(NOISE_FREQUENCY * t), jnp.float32)[None, :, None]

    # Trainable: C of each SSM and every non-SSM parameter (the authors train only C in the SSM).
    frozen = ("log_neg_real", "imag", "B", "D", "log_step")
    trainable = nnx.All(nnx.Param, nnx.Not(nnx.Any(*(nnx.PathContains(name) for name in frozen))))

    def build(init):
        model = SequenceModel(
            1,
            args.features,
            10,
            layers=2,
            ssm_kwargs=dict(state_size=args.state_size, init=init, dt_min=args.step, dt_max=args.step),
            residual=False,
            rngs=nnx.Rngs(args.seed),
        )
        for ssm in model.ssms:
            ssm.D[...] = jnp.zeros_like(ssm.D[...])
        return model

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable))(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def accuracy(model, x, y, amplitude):
        return jnp.mean(jnp.argmax(model(x + amplitude * fourier_mode), -1) == y)

    rng = np.random.default_rng(args.seed)
    results, curves = {}, {}
    for name, init in (("S4D-LegS", "legs"), ("S4-PTD", "ptd")):
        model = build(init)
        schedule = optax.cosine_decay_schedule(args.lr, args.steps)
        optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=0.01), wrt=trainable)
        losses = []
        for _ in progress(range(args.steps), total=args.steps, desc=name):
            idx = rng.integers(0, args.num_train, args.batch_size)
            losses.append(float(train_step(model, optimizer, train["inputs"][idx], train["labels"][idx])))
        acc = [float(accuracy(model, test["inputs"], test["labels"], a)) for a in AMPLITUDES]
        results[name] = {
            "final_loss": float(np.mean(losses[-20:])),
            "accuracy": dict(zip(map(str, AMPLITUDES), acc, strict=True)),
        }
        curves[name] = (list(AMPLITUDES), acc)
        print(name, " ".join(f"a={a}: {x:.3f}" for a, x in zip(AMPLITUDES, acc, strict=True)))

    save_json(args.out / "ssm_robustness.json", results)
    plot_curves(
        args.out / "ssm_robustness.png",
        curves,
        xlabel=f"amplitude a of a*cos({NOISE_FREQUENCY} t)",
        ylabel="test accuracy",
        title="Fourier-mode noise at the S4D-LegS spike",
    )
    return results


if __name__ == "__main__":
    main()
