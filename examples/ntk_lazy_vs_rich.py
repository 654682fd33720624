"""Lazy vs rich training, seen through the empirical NTK.

A two-hidden-layer ReLU MLP in the NTK parameterisation is trained by full-batch gradient descent on a
synthetic regression task, at several widths and output scales α. Following Chizat, Oyallon & Bach
("On Lazy Training in Differentiable Programming", NeurIPS 2019), the trained model is
f_α(θ, x) = α (f(θ, x) − f(θ₀, x)), trained on ½‖f_α − y‖² with a step size ∝ 1/α² (set from the top
eigenvalue of its NTK α²Θ), so every α follows the same function-space dynamics while linearised;
large α is lazy, small α must move the features to fit.

The example measures, for every (width, α):
- the kernel distance ‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F of the network's NTK before and after training, which
  shrinks as the width or α grows (the lazy regime of Jacot et al. 2018; Lee et al. 2019) and grows
  as they shrink (feature learning, the rich regime; Kumar et al. 2024);
- the training loss against the NTK gradient-flow prediction of `ntk_predict_mse` (Lee et al. 2019),
  and how far the trained network's outputs on held-out inputs are from that prediction.

Outputs in --out: kernel_distance.png, training_curves.png and results.json.
"""

from __future__ import annotations

import numpy as np

from examples._common import base_parser, plot_curves, progress, save_json, setup

SMOKE_ARGS: list[str] = ["--steps", "5", "--widths", "8", "16", "--alphas", "1", "--n-train", "4"]


def init_mlp(key, sizes):
    """W, b ~ N(0, 1) per layer; the NTK parameterisation scales them in the forward pass."""
    import jax

    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (a, b)), jax.random.normal(jax.random.fold_in(k, 1), (b,)))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(params, x):
    """ReLU MLP, z = √2 W h / √n_in + 0.1 b (He scale in the NTK parameterisation)."""
    import jax
    import jax.numpy as jnp

    for i, (w, b) in enumerate(params):
        x = jnp.sqrt(2.0) * x @ w / np.sqrt(w.shape[0]) + 0.1 * b
        x = jax.nn.relu(x) if i < len(params) - 1 else x
    return x


def run(width, alpha, steps, data, seed):
    """Train f_α for `steps` GD steps; return the measured and predicted loss curves and kernel distance."""
    import jax
    import jax.numpy as jnp

    from jaxdl.probes.ntk import empirical_ntk
    from jaxdl.probes.ntk_limits import ntk_predict_mse, ntk_spectrum

    x_train, y_train, x_test = data
    params0 = init_mlp(jax.random.key(seed), (x_train.shape[1], width, width, 1))
    model = lambda p, x: alpha * (mlp(p, x) - mlp(params0, x))  # f_α, zero at initialisation
    ntk = jax.jit(lambda p: empirical_ntk(mlp, p, x_train, implementation="structured"))
    theta0 = ntk(params0)
    lr = 0.5 / float(ntk_spectrum(alpha**2 * theta0).eigenvalues[0])  # stable: η λ_max(Θ_α) < 2

    loss = lambda p: 0.5 * jnp.sum((model(p, x_train) - y_train) ** 2)
    step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - lr * g, p, jax.grad(loss)(p)))
    params, losses = params0, [float(loss(params0))]
    for _ in range(steps):
        params = step(params)
        losses.append(float(loss(params)))
    times = jnp.arange(steps + 1, dtype=jnp.float32)
    zeros = jnp.zeros_like(y_train)  # f_α starts at 0
    theta_test = alpha**2 * empirical_ntk(mlp, params0, x_test, x_train, implementation="structured")
    zeros_test = jnp.zeros((x_test.shape[0], 1))
    prediction = ntk_predict_mse(alpha**2 * theta0, theta_test, y_train, zeros, zeros_test, times, lr)
    predicted = prediction.train
    predicted_losses = 0.5 * jnp.sum((predicted - y_train) ** 2, axis=(1, 2))
    distance = float(jnp.linalg.norm(ntk(params) - theta0) / jnp.linalg.norm(theta0))
    trained = model(params, x_test)
    return {
        "kernel_distance": distance,
        # ‖f_T − f_T^NTK‖ / ‖f_T‖ on held-out inputs (f_0 = 0): how far training left the lazy prediction.
        "test_prediction_error": float(
            jnp.linalg.norm(trained - prediction.test[-1]) / jnp.linalg.norm(trained)
        ),
        "final_loss": losses[-1],
        "losses": losses,
        "predicted_losses": [float(v) for v in predicted_losses],
    }


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=400)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128, 512, 2048])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--n-train", type=int, default=32)
    args = parser.parse_args(argv)
    setup(args)
    import jax

    with jax.default_matmul_precision("highest"):
        rng = np.random.default_rng(args.seed)
        x_train = rng.normal(size=(args.n_train, 8)).astype(np.float32)
        x_train /= np.linalg.norm(x_train, axis=1, keepdims=True) / np.sqrt(8)
        direction = rng.normal(size=(8,))
        y_train = np.sin(x_train @ direction / np.sqrt(8))[:, None].astype(np.float32)
        x_test = rng.normal(size=(64, 8)).astype(np.float32)
        x_test /= np.linalg.norm(x_test, axis=1, keepdims=True) / np.sqrt(8)

        results = {}
        runs = [(w, a) for a in args.alphas for w in args.widths]
        for width, alpha in progress(runs, total=len(runs), desc="width × α"):
            results[(width, alpha)] = run(width, alpha, args.steps, (x_train, y_train, x_test), args.seed)

    # log10 axes: the distances span three decades, and the losses decay exponentially.
    distance_curves = {
        f"α = {a:g}": (args.widths, [np.log10(results[(w, a)]["kernel_distance"]) for w in args.widths])
        for a in args.alphas
    }
    plot_curves(
        args.out / "kernel_distance.png",
        distance_curves,
        xlabel="width",
        ylabel="log10 ‖Θ_T − Θ_0‖ / ‖Θ_0‖",
        title="NTK movement during training",
        logx=True,
    )
    steps = list(range(args.steps + 1))
    alpha = min(args.alphas)  # the richest regime, where GD and the NTK prediction part ways
    curves = {}
    for w in args.widths:
        curves[f"width {w}: GD"] = (steps, np.log10(results[(w, alpha)]["losses"]))
        curves[f"width {w}: NTK prediction"] = (steps, np.log10(results[(w, alpha)]["predicted_losses"]))
    plot_curves(
        args.out / "training_curves.png",
        curves,
        xlabel="step",
        ylabel="log10 train loss ½‖f − y‖²",
        title=f"gradient descent vs NTK gradient flow (α = {alpha:g})",
    )
    summary = {
        f"width={w},alpha={a:g}": {k: v for k, v in r.items() if not k.endswith("losses")}
        for (w, a), r in results.items()
    }
    save_json(args.out / "results.json", summary)
    for name, values in summary.items():
        print(
            f"{name}: kernel distance {values['kernel_distance']:.4f}, "
            f"test NTK-prediction error {values['test_prediction_error']:.4f}"
        )
    return summary


if __name__ == "__main__":
    main()
