"""Function fitting with grid extension (Liu et al. 2024, "KAN", Sec. 3.1, Fig. 3.1).

A [2, 5, 1] B-spline KAN learns f(x, y) = exp(sin(pi x) + y^2) from 1000 points with full-batch LBFGS; after
each stage the grid is extended (G = 3 -> 5 -> 10 -> 20, coefficients refit by least squares) and training
continues. Writes the train/test RMSE per grid size to kan_fit.json and kan_fit.png.

    python examples/kan_fit.py --steps 200 --grids 3 5 10 20
"""

from __future__ import annotations

import functools

from _common import base_parser, plot_curves, progress, save_json, setup

SMOKE_ARGS: list[str] = ["--steps", "4", "--grids", "3", "--num-train", "64", "--num-test", "64"]
SMOKE_ARGS += ["--optimizer", "adam"]


def fit(model, x, y, steps: int, optimizer: str) -> None:
    """Full-batch training on the MSE in one jitted scan: LBFGS as pykan's `fit`, or Adam (lr 1e-2)."""
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    nnx.update(model, _compiled_fit(graphdef, steps, optimizer)(params, rest, x, y))


@functools.cache  # one compilation per model structure (grid size), not per call
def _compiled_fit(graphdef, steps: int, optimizer: str):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    opt = optax.lbfgs() if optimizer == "lbfgs" else optax.adam(1e-2)

    def run(params, rest, x, y):
        loss = lambda p: jnp.mean((nnx.merge(graphdef, p, rest)(x) - y) ** 2)
        value_and_grad = optax.value_and_grad_from_state(loss) if optimizer == "lbfgs" else None

        def step(carry, _):
            p, state = carry
            if value_and_grad is None:
                value, grad = jax.value_and_grad(loss)(p)
            else:
                value, grad = value_and_grad(p, state=state)
            updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
            return (optax.apply_updates(p, updates), state), value

        return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)[0][0]

    return jax.jit(run)


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=200)
    parser.add_argument("--grids", type=int, nargs="+", default=[3, 5, 10, 20], help="grid sizes in order")
    parser.add_argument("--width", type=int, nargs="+", default=[2, 5, 1], help="layer widths")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    args = parser.parse_args(argv)
    setup(args)

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxdl.data.functions import make_dataset
    from jaxdl.nn.kan import KAN

    data = make_dataset(
        "exp_sin", jax.random.key(args.seed), num_train=args.num_train, num_test=args.num_test
    )
    x, y = data["train_input"], data["train_label"]
    model = KAN(args.width, grid_size=args.grids[0], rngs=nnx.Rngs(args.seed))

    def rmse(inputs, labels):
        return float(jnp.sqrt(jnp.mean((model(inputs) - labels) ** 2)))

    rows = []
    with jax.default_matmul_precision("highest"):
        for grid_size in progress(args.grids, total=len(args.grids), desc="grid sizes"):
            if grid_size != model.layers[0].grid_size:
                model.refine(x, grid_size)  # grid extension: same function, finer grid
            for _ in range(2):  # pykan moves the grid to the data early in each stage
                model.update_grid(x)
                fit(model, x, y, args.steps // 2, args.optimizer)
            rows.append(
                {
                    "grid_size": grid_size,
                    "train_rmse": rmse(x, y),
                    "test_rmse": rmse(data["test_input"], data["test_label"]),
                }
            )
            print(
                f"G={grid_size:3d}  train RMSE {rows[-1]['train_rmse']:.3e}  test RMSE {rows[-1]['test_rmse']:.3e}"
            )

    grids = [r["grid_size"] for r in rows]
    plot_curves(
        args.out / "kan_fit.png",
        {
            "train": (grids, [r["train_rmse"] for r in rows]),
            "test": (grids, [r["test_rmse"] for r in rows]),
        },
        xlabel="grid size G",
        ylabel="RMSE (log scale below)",
        title=f"KAN {args.width} on exp(sin(pi x) + y^2)",
        logx=True,
    )
    result = {"width": args.width, "steps_per_grid": args.steps, "results": rows}
    save_json(args.out / "kan_fit.json", result)
    return result


if __name__ == "__main__":
    main()
