"""Hessian spectrum and NTK eigenvalues of a digits classifier over training (real data, offline).

scikit-learn's bundled 8x8 handwritten digits (1,797 images; nothing downloads). A one-hidden-layer
tanh MLP (64 -> 32 -> 10, 2,410 parameters) is trained by full-batch gradient descent with step eta
on the cross-entropy. Every ``--every`` steps the jitted probes of `jaxdl.probes` record:

- the Hessian's top eigenvalues (Lanczos, `top_eigenvalues`) beside 2/eta, the edge-of-stability
  threshold of gradient descent (Cohen et al., ICLR 2021), and its trace (Hutchinson, `hessian_trace`);
- the empirical NTK (Jacot et al. 2018) of a fixed set of training images (`empirical_ntk`, averaged
  over the 10 logits): its largest eigenvalues, its condition number and its distance from the
  initial kernel, ||Theta_t - Theta_0|| / ||Theta_0|| (lazy vs rich training).

The baselines are exact dense computations of the same quantities at the end of training: the full
2,410 x 2,410 Hessian (`jax.hessian` on the flattened parameters) and J J^T from the full Jacobian,
each diagonalised with `numpy.linalg.eigvalsh`; the probes must agree with them.

    python examples/probes_digits.py
"""

from __future__ import annotations

import numpy as np
from _common import base_parser, load_digits, plot_curves, progress, save_json, setup

SMOKE_ARGS = "--steps 20 --every 10 --limit 200 --hidden 8 --ntk-examples 16 --lanczos-steps 12".split()


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=2000)
    parser.add_argument("--limit", type=int, default=None, help="use only this many digits (smoke runs)")
    parser.add_argument("--learning-rate", type=float, default=0.5, help="GD step eta")
    parser.add_argument("--every", type=int, default=100, help="probe every N steps")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--ntk-examples", type=int, default=100, help="images in the NTK probe set")
    parser.add_argument("--top", type=int, default=3, help="Hessian eigenvalues tracked")
    parser.add_argument("--lanczos-steps", type=int, default=40)
    args = parser.parse_args(argv)
    setup(args)

    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from jaxdl.probes import empirical_ntk, hessian_trace, top_eigenvalues

    data = load_digits(args.seed, limit=args.limit)
    train = {"x": jnp.asarray(data["x_train"].reshape(-1, 64)), "y": jnp.asarray(data["y_train"])}
    test = {"x": jnp.asarray(data["x_test"].reshape(-1, 64)), "y": jnp.asarray(data["y_test"])}
    ntk_x = train["x"][: args.ntk_examples]
    eta = args.learning_rate
    print(
        f"digits: {len(data['y_train'])} train / {len(data['y_test'])} test; GD with eta = {eta} (2/eta = {2 / eta})"
    )

    k1, k2, k_probe = jax.random.split(jax.random.key(args.seed), 3)
    params = {
        "w1": jax.random.normal(k1, (64, args.hidden)) / 8.0,
        "b1": jnp.zeros(args.hidden),
        "w2": jax.random.normal(k2, (args.hidden, 10)) / np.sqrt(args.hidden),
        "b2": jnp.zeros(10),
    }

    def apply(params, x):
        return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]

    def loss_fn(params, batch):
        logits = apply(params, batch["x"])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], 1))

    def accuracy(params, batch):
        return jnp.mean(jnp.argmax(apply(params, batch["x"]), -1) == batch["y"])

    @jax.jit
    def train_chunk(params, batch):  # `every` GD steps in one compiled loop
        def step(p, _):
            grads = jax.grad(loss_fn)(p, batch)
            return jax.tree.map(lambda w, g: w - eta * g, p, grads), None

        return jax.lax.scan(step, params, None, length=args.every)[0]

    @jax.jit
    def probe(params, batch, key):
        k_eig, k_trace = jax.random.split(key)
        top = top_eigenvalues(
            loss_fn, params, batch, key=k_eig, k=args.top, num_iters=args.lanczos_steps, tol=0.0
        )
        trace = hessian_trace(loss_fn, params, batch, key=k_trace, num_samples=50, method="hutch++")
        ntk = empirical_ntk(apply, params, ntk_x)  # (n, n), averaged over the logits
        return top.eigenvalues, trace.trace, ntk

    record = {k: [] for k in ("step", "loss", "train_acc", "test_acc", "hessian_top", "hessian_trace")}
    record.update(ntk_top=[], ntk_condition=[], ntk_distance=[])
    ntk0 = None
    chunks = max(args.steps // args.every, 1)
    for chunk in progress(range(chunks + 1), total=chunks + 1, desc="GD + probes"):
        top, trace, ntk = probe(params, train, jax.random.fold_in(k_probe, chunk))
        ntk_eigs = np.linalg.eigvalsh(np.asarray(ntk, np.float64))[::-1]
        ntk0 = ntk if ntk0 is None else ntk0
        record["step"].append(chunk * args.every)
        record["loss"].append(float(loss_fn(params, train)))
        record["train_acc"].append(float(accuracy(params, train)))
        record["test_acc"].append(float(accuracy(params, test)))
        record["hessian_top"].append(np.asarray(top).tolist())
        record["hessian_trace"].append(float(trace))
        record["ntk_top"].append(ntk_eigs[: args.top].tolist())
        record["ntk_condition"].append(float(ntk_eigs[0] / max(ntk_eigs[-1], 1e-30)))
        record["ntk_distance"].append(float(jnp.linalg.norm(ntk - ntk0) / jnp.linalg.norm(ntk0)))
        if chunk < chunks:
            params = train_chunk(params, train)

    # Baselines: the same quantities from dense matrices, at the final parameters.
    flat, unravel = ravel_pytree(params)
    dense_hessian = np.asarray(jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), train)))(flat), np.float64)
    hessian_eigs = np.linalg.eigvalsh(dense_hessian)[::-1]
    jacobian = np.asarray(jax.jit(jax.jacobian(lambda f: apply(unravel(f), ntk_x)))(flat), np.float64)
    dense_ntk = np.einsum("iop,jop->ij", jacobian, jacobian) / jacobian.shape[1]  # mean over the logits
    dense_ntk_eigs = np.linalg.eigvalsh(dense_ntk)[::-1]
    final = {
        "hessian_top_lanczos": record["hessian_top"][-1],
        "hessian_top_dense": hessian_eigs[: args.top].tolist(),
        "hessian_trace_hutchpp": record["hessian_trace"][-1],
        "hessian_trace_dense": float(np.trace(dense_hessian)),
        "ntk_top_probe": record["ntk_top"][-1],
        "ntk_top_dense": dense_ntk_eigs[: args.top].tolist(),
    }
    results = {
        "learning_rate": eta,
        "two_over_eta": 2.0 / eta,
        "params": int(flat.size),
        "final_loss": record["loss"][-1],
        "final_train_accuracy": record["train_acc"][-1],
        "final_test_accuracy": record["test_acc"][-1],
        "max_sharpness": max(top[0] for top in record["hessian_top"]),
        "final": final,
        "history": record,
    }

    print(
        " step |   loss | test acc | Hessian top eigenvalues | tr(H)   | NTK top eigenvalues     | NTK cond | NTK moved"
    )
    for i, step in enumerate(record["step"]):
        h = " ".join(f"{v:7.3f}" for v in record["hessian_top"][i])
        n = " ".join(f"{v:7.2f}" for v in record["ntk_top"][i])
        print(
            f" {step:4d} | {record['loss'][i]:6.3f} | {record['test_acc'][i]:8.4f} | {h:23s} | "
            f"{record['hessian_trace'][i]:7.3f} | {n:23s} | {record['ntk_condition'][i]:8.1e} | "
            f"{record['ntk_distance'][i]:.3f}"
        )
    print(f"2/eta = {2 / eta:.3f}; max sharpness {results['max_sharpness']:.3f}")
    print("at the end, probe vs dense baseline:")
    print(
        f"  Hessian top: Lanczos {np.round(final['hessian_top_lanczos'], 5).tolist()} vs eigvalsh {np.round(final['hessian_top_dense'], 5).tolist()}"
    )
    print(
        f"  Hessian trace: Hutch++ {final['hessian_trace_hutchpp']:.4f} vs exact {final['hessian_trace_dense']:.4f}"
    )
    print(
        f"  NTK top: empirical_ntk {np.round(final['ntk_top_probe'], 4).tolist()} vs dense J J^T {np.round(final['ntk_top_dense'], 4).tolist()}"
    )

    steps = record["step"]
    plot_curves(
        args.out / "probes_digits_hessian.png",
        {
            **{f"λ{i + 1}(H)": (steps, [t[i] for t in record["hessian_top"]]) for i in range(args.top)},
            "2/η": (steps, [2.0 / eta] * len(steps)),
        },
        xlabel="GD step",
        ylabel="Hessian eigenvalue",
        title="Hessian spectrum over training (digits)",
    )
    plot_curves(
        args.out / "probes_digits_ntk.png",
        {
            **{f"λ{i + 1}(Θ)": (steps, [t[i] for t in record["ntk_top"]]) for i in range(args.top)},
            "‖Θ_t − Θ_0‖/‖Θ_0‖ × 10": (steps, [10 * d for d in record["ntk_distance"]]),
        },
        xlabel="GD step",
        ylabel="NTK eigenvalue",
        title="Empirical NTK over training (digits)",
    )
    save_json(args.out / "probes_digits.json", results)
    return results


if __name__ == "__main__":
    main()
