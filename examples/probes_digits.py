"""Hessian spectrum and NTK eigenvalues of a digits classifier over training (real data, offline).

scikit-learn's bundled 8x8 handwritten digits (1,797 images; nothing downloads). A one-hidden-layer
tanh MLP (64 -> 32 -> 10, 2,410 parameters) is trained by full-batch gradient descent with step eta
on the cross-entropy, ``--every`` steps per compiled ``lax.scan``. Inside that jitted loop the in-loop
monitor of `jaxdl.probes` (`training_monitor`, probing when ``step % every == 0`` under ``lax.cond``)
records the sharpness lambda_max(H) beside 2/eta, the edge-of-stability threshold of gradient descent
(Cohen et al., ICLR 2021), the Hutchinson trace tr(H), and the largest eigenvalue and condition number
of the empirical NTK (Jacot et al. 2018) of a fixed set of training images. Between chunks the probe
factories, compiled once (`hessian_probes`, `empirical_ntk_fn`), give the Hessian's top three
eigenvalues, the NTK's top three (averaged over the 10 logits) and the kernel's distance from its
initial value, ||Theta_t - Theta_0|| / ||Theta_0|| (lazy vs rich training).

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

    from jaxdl.probes import empirical_ntk_fn, hessian_probes, training_monitor

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

    monitor = training_monitor(
        loss_fn,
        learning_rate=eta,
        every=args.every,
        num_iters=args.lanczos_steps,
        num_samples=50,
        apply_fn=apply,
        ntk_inputs=ntk_x,
    )
    hessian = hessian_probes(loss_fn)  # compiled once per shapes, reused at every checkpoint
    ntk_fn = empirical_ntk_fn(apply)  # (n, n) kernel, averaged over the logits

    @jax.jit
    def train_chunk(params, batch, steps, key):
        """GD steps ``steps`` in one compiled loop; the monitor probes at the first (step % every == 0)."""

        def step(p, s):
            grads = jax.grad(loss_fn)(p, batch)
            record = monitor(s, p, batch, jax.random.fold_in(key, s), grads=grads)
            return jax.tree.map(lambda w, g: w - eta * g, p, grads), record

        return jax.lax.scan(step, params, steps)

    keys = ("step", "loss", "train_acc", "test_acc", "sharpness", "trace", "ntk_max", "ntk_condition")
    record = {k: [] for k in keys}
    record.update(hessian_top=[], ntk_top=[], ntk_distance=[])
    ntk0 = ntk_fn(params, ntk_x)
    chunks = max(args.steps // args.every, 1)
    for chunk in progress(range(chunks + 1), total=chunks + 1, desc="GD + probes"):
        step = chunk * args.every
        key = jax.random.fold_in(k_probe, chunk)
        top = hessian.top_eigenvalues(params, train, key, k=args.top, num_iters=args.lanczos_steps, tol=0.0)
        ntk = ntk_fn(params, ntk_x)
        if chunk < chunks:
            params_next, records = train_chunk(params, train, step + jnp.arange(args.every), key)
            probed = jax.tree.map(lambda r: r[0], records)  # the monitor's record at `step`
        else:  # after the last step: the same probes, called from the host
            params_next, probed = params, monitor.compute(params, train, key, step=step)
        assert bool(probed.computed)
        record["step"].append(step)
        record["loss"].append(float(loss_fn(params, train)))
        record["train_acc"].append(float(accuracy(params, train)))
        record["test_acc"].append(float(accuracy(params, test)))
        record["sharpness"].append(float(probed.sharpness))
        record["trace"].append(float(probed.trace))
        record["ntk_max"].append(float(probed.ntk_max_eigenvalue))
        record["ntk_condition"].append(float(probed.ntk_condition_number))
        record["hessian_top"].append(np.asarray(top.eigenvalues).tolist())
        record["ntk_top"].append(np.linalg.eigvalsh(np.asarray(ntk, np.float64))[::-1][: args.top].tolist())
        record["ntk_distance"].append(float(jnp.linalg.norm(ntk - ntk0) / jnp.linalg.norm(ntk0)))
        params = params_next

    # Baselines: the same quantities from dense matrices, at the final parameters.
    flat, unravel = ravel_pytree(params)
    dense_hessian = np.asarray(jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), train)))(flat), np.float64)
    hessian_eigs = np.linalg.eigvalsh(dense_hessian)[::-1]
    jacobian = np.asarray(jax.jit(jax.jacobian(lambda f: apply(unravel(f), ntk_x)))(flat), np.float64)
    dense_ntk = np.einsum("iop,jop->ij", jacobian, jacobian) / jacobian.shape[1]  # mean over the logits
    dense_ntk_eigs = np.linalg.eigvalsh(dense_ntk)[::-1]
    final = {
        "sharpness_monitor": record["sharpness"][-1],
        "hessian_top_lanczos": record["hessian_top"][-1],
        "hessian_top_dense": hessian_eigs[: args.top].tolist(),
        "hessian_trace_hutchinson": record["trace"][-1],
        "hessian_trace_dense": float(np.trace(dense_hessian)),
        "ntk_max_monitor": record["ntk_max"][-1],
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
        "max_sharpness": max(record["sharpness"]),
        "final": final,
        "history": record,
    }

    print(
        " step |   loss | test acc | λmax(H) monitor | Hessian top 3           | tr(H)   "
        "| NTK top 3 (factory)        | NTK cond | NTK moved"
    )
    for i, step in enumerate(record["step"]):
        h = " ".join(f"{v:7.3f}" for v in record["hessian_top"][i])
        n = " ".join(f"{v:8.2f}" for v in record["ntk_top"][i])
        print(
            f" {step:4d} | {record['loss'][i]:6.3f} | {record['test_acc'][i]:8.4f} | "
            f"{record['sharpness'][i]:15.3f} | {h:23s} | {record['trace'][i]:7.3f} | {n:26s} | "
            f"{record['ntk_condition'][i]:8.1e} | {record['ntk_distance'][i]:.3f}"
        )
    print(f"2/eta = {2 / eta:.3f}; max sharpness {results['max_sharpness']:.3f}")
    print("at the end, probes vs the dense baseline:")
    print(
        f"  Hessian: monitor λmax {final['sharpness_monitor']:.5f}, hessian_probes top 3 "
        f"{np.round(final['hessian_top_lanczos'], 5).tolist()} vs eigvalsh "
        f"{np.round(final['hessian_top_dense'], 5).tolist()}"
    )
    print(
        f"  trace: monitor's Hutchinson {final['hessian_trace_hutchinson']:.4f} "
        f"vs exact {final['hessian_trace_dense']:.4f}"
    )
    print(
        f"  NTK: monitor λmax {final['ntk_max_monitor']:.4f}, empirical_ntk_fn top 3 "
        f"{np.round(final['ntk_top_probe'], 4).tolist()} vs dense J J^T {np.round(final['ntk_top_dense'], 4).tolist()}"
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
