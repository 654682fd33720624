"""Track the Hessian while training: sharpness against 2/eta, trace, and the eigenvalue density.

Full-batch gradient descent with a fixed learning rate eta on a small tanh MLP. Every
``--every`` steps the jitted probes record the sharpness lambda_max (Lanczos), the trace
(Hutchinson) and the spectral density (stochastic Lanczos quadrature). Under GD the
sharpness rises until it reaches 2/eta and then hovers there: the edge of stability
(Cohen et al., ICLR 2021). At the end, minibatch and full-data Hessians are compared and
turned into a learning-rate-vs-batch-size rule (Granziol et al., JMLR 2022).

The data are synthetic (a random teacher, y = sin(x W)), so nothing is downloaded.

    python examples/hessian_spectrum.py --out out/hessian   # ~1 minute of CPU
"""

from __future__ import annotations

import numpy as np
from _common import base_parser, plot_curves, progress, save_json, setup

SMOKE_ARGS: list[str] = ["--steps", "20", "--every", "10", "--lanczos-steps", "8", "--num-runs", "2"]


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=2000)
    parser.add_argument(
        "--learning-rate", type=float, default=0.25, help="GD step eta (default: %(default)s)"
    )
    parser.add_argument("--every", type=int, default=100, help="probe every N steps (default: %(default)s)")
    parser.add_argument("--width", type=int, default=16, help="hidden width (default: %(default)s)")
    parser.add_argument("--examples", type=int, default=32, help="training points (default: %(default)s)")
    parser.add_argument(
        "--lanczos-steps", type=int, default=40, help="SLQ steps per run (default: %(default)s)"
    )
    parser.add_argument("--num-runs", type=int, default=4, help="SLQ runs (default: %(default)s)")
    args = parser.parse_args(argv)
    setup(args)

    import jax
    import jax.numpy as jnp

    from jaxdl.probes import hessian as hs
    from jaxdl.probes import monitors as mon

    eta, dim, outputs = args.learning_rate, 8, 2
    key = jax.random.key(args.seed)
    k_x, k_teacher, k_init, k_probe = jax.random.split(key, 4)
    print("data: synthetic regression y = sin(x W), x ~ N(0, I) (no download)")
    x = jax.random.normal(k_x, (args.examples, dim))
    data = {"x": x, "y": jnp.sin(x @ jax.random.normal(k_teacher, (dim, outputs)))}

    # a bias-free tanh MLP trained with squared error, as in Cohen et al.'s MSE experiments
    sizes = (dim, args.width, args.width, outputs)
    keys = jax.random.split(k_init, len(sizes) - 1)
    params = [
        jax.random.normal(k, (a, b)) / np.sqrt(a) for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]

    def loss_fn(params, batch):
        h = batch["x"]
        for w in params[:-1]:
            h = jnp.tanh(h @ w)
        return 0.5 * jnp.mean(jnp.sum((h @ params[-1] - batch["y"]) ** 2, axis=-1))

    # data enter as arguments, not closed-over constants, so XLA does not constant-fold them
    @jax.jit
    def train_chunk(params, data):
        def step(p, _):
            loss, g = jax.value_and_grad(loss_fn)(p, data)
            return jax.tree.map(lambda a, b: a - eta * b, p, g), loss

        return jax.lax.scan(step, params, None, length=args.every)

    @jax.jit
    def probe(params, data, key):
        k_eig, k_tr, k_sd = jax.random.split(key, 3)
        top = hs.top_eigenvalues(loss_fn, params, data, key=k_eig, num_iters=20, tol=0.0)
        trace = hs.hessian_trace(loss_fn, params, data, key=k_tr, num_samples=50)
        density = hs.spectral_density(
            loss_fn,
            params,
            data,
            key=k_sd,
            num_runs=args.num_runs,
            lanczos_steps=args.lanczos_steps,
            num_points=2000,
        )
        return top.eigenvalues[0], trace.trace, density

    num_chunks = max(args.steps // args.every, 1)
    record = {"step": [], "sharpness": [], "trace": [], "loss": []}
    densities = {}
    density_at = {0, num_chunks // 2, num_chunks}
    for chunk in progress(range(num_chunks + 1), total=num_chunks + 1, desc="GD + probes"):
        sharpness, trace, density = probe(params, data, jax.random.fold_in(k_probe, chunk))
        step = chunk * args.every
        record["step"].append(step)
        record["sharpness"].append(float(sharpness))
        record["trace"].append(float(trace))
        record["loss"].append(float(loss_fn(params, data)))
        if chunk in density_at:
            densities[f"step {step}"] = (np.asarray(density.grid), np.asarray(density.density))
        if chunk < num_chunks:
            params, _ = train_chunk(params, data)

    comparison = mon.batch_vs_full_spectrum(
        loss_fn, params, data, key=k_probe, batch_sizes=(4, 16), num_draws=4, num_iters=20
    )
    rates = mon.lr_from_spectrum(comparison, [4, 8, 16, 32])

    steps = record["step"]
    plot_curves(
        args.out / "sharpness.png",
        {"sharpness λ_max": (steps, record["sharpness"]), "2/η": (steps, [2.0 / eta] * len(steps))},
        xlabel="GD step",
        ylabel="eigenvalue",
        title=f"Edge of stability, η = {eta}",
    )
    plot_curves(
        args.out / "density.png",
        densities,
        xlabel="eigenvalue",
        ylabel="density",
        title="Hessian SLQ density",
    )
    late = record["sharpness"][len(steps) // 2 :]
    result = {
        "learning_rate": eta,
        "two_over_eta": 2.0 / eta,
        "initial_sharpness": record["sharpness"][0],
        "max_sharpness": max(record["sharpness"]),
        "late_sharpness_mean": float(np.mean(late)),
        "final_sharpness_ratio": record["sharpness"][-1] * eta / 2.0,
        "final_trace_ratio": record["trace"][-1] * eta / 2.0,
        "final_loss": record["loss"][-1],
        "batch_sizes": [4, 16],
        "batch_lambda_max": np.mean(np.asarray(comparison.batch_max), axis=1).tolist(),
        "full_lambda_max": float(comparison.full_max),
        "sgd_lr_by_batch": dict(zip([4, 8, 16, 32], np.asarray(rates.learning_rates).tolist(), strict=True)),
        "history": record,
    }
    save_json(args.out / "hessian_spectrum.json", result)
    print(
        f"sharpness {result['initial_sharpness']:.2f} -> max {result['max_sharpness']:.2f}, "
        f"late mean {result['late_sharpness_mean']:.2f} (2/eta = {2 / eta:.2f}); "
        f"batch lambda_max {result['batch_lambda_max']} vs full {result['full_lambda_max']:.2f}"
    )
    return result


if __name__ == "__main__":
    main()
