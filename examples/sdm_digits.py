"""An SDM head on a digits 0-4 classifier: what it admits at alpha = 0.95, in and out of distribution.

scikit-learn's bundled 8x8 handwritten digits (real data, nothing downloads). A small MLP is trained on
digits 0-4 only; its penultimate features feed an SDM head (Schmaltz, "Similarity-Distance-Magnitude
Activations", arXiv:2509.12760) fitted on the same training images and calibrated on held-out 0-4
images at alpha = 0.95. On the held-out test quarter of 0-4 we report the admitted set's accuracy
(the target is >= alpha) and the coverage; on every image of the digits 5-9, which the classifier never
saw, the share the head admits anyway (each such admission is an error).

The baseline is softmax thresholding at the same coverage: the threshold on the classifier's top
softmax probability that admits as many in-distribution test images as the SDM head did, and the
share of unseen digits that it admits.

    python examples/sdm_digits.py
"""

from __future__ import annotations

import numpy as np
from _common import base_parser, load_digits, plot_curves, progress, save_json, setup, softmax_threshold

SMOKE_ARGS = "--steps 30 --limit 300 --sdm-epochs 2 --hidden 16 --sdm-hidden 16".split()
SEEN = 5  # digits 0..SEEN-1 are in distribution


def admitted_accuracy(admitted, prediction, labels) -> float | None:
    """Accuracy over the admitted points (None when nothing is admitted)."""
    return float(np.mean(prediction[admitted] == labels[admitted])) if admitted.any() else None


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=1500, batch_size=64)
    parser.add_argument("--limit", type=int, default=None, help="use only this many digits (smoke runs)")
    parser.add_argument("--alpha", type=float, default=0.95)
    parser.add_argument("--hidden", type=int, default=64, help="classifier width")
    parser.add_argument("--sdm-hidden", type=int, default=256, help="SDM exemplar dimension M")
    parser.add_argument("--sdm-epochs", type=int, default=100)
    parser.add_argument("--sdm-lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    setup(args)

    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxdl.data import ArraySource, Loader
    from jaxdl.nn.sdm import SDMHead, fit_sdm

    data = load_digits(args.seed, limit=args.limit)
    flat = {k: v.reshape(len(v), 64) if k.startswith("x") else v for k, v in data.items()}
    seen_train = flat["y_train"] < SEEN
    x_in, y_in = flat["x_train"][seen_train], flat["y_train"][seen_train]
    third = len(y_in) // 3  # a third of the 0-4 training images is held out for calibration
    (x_ca, y_ca), (x_tr, y_tr) = (x_in[:third], y_in[:third]), (x_in[third:], y_in[third:])
    seen_test = flat["y_test"] < SEEN
    x_te, y_te = flat["x_test"][seen_test], flat["y_test"][seen_test]
    unseen = np.concatenate([flat["x_train"][~seen_train], flat["x_test"][~seen_test]])
    print(
        f"digits 0-{SEEN - 1}: {len(y_tr)} train, {len(y_ca)} calibration, {len(y_te)} test; "
        f"digits {SEEN}-9 never seen: {len(unseen)}"
    )

    class MLP(nnx.Module):
        def __init__(self, hidden, *, rngs):
            self.layer1 = nnx.Linear(64, hidden, rngs=rngs)
            self.layer2 = nnx.Linear(hidden, hidden, rngs=rngs)
            self.out = nnx.Linear(hidden, SEEN, rngs=rngs)

        def features(self, x):
            return nnx.relu(self.layer2(nnx.relu(self.layer1(x))))

        def __call__(self, x):
            return self.out(self.features(x))

    classifier = MLP(args.hidden, rngs=nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(classifier, optax.adamw(1e-3, weight_decay=1e-4), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    loader = Loader(
        ArraySource({"x": x_tr, "y": y_tr}), batch_size=min(args.batch_size, len(y_tr)), seed=args.seed
    )
    batches = loader.stream()
    for _ in progress(range(args.steps), total=args.steps, desc="classifier"):
        batch = next(batches)
        train_step(classifier, optimizer, batch["x"], batch["y"])
    features = nnx.jit(lambda m, x: m.features(x))

    head = SDMHead(args.hidden, SEEN, hidden=args.sdm_hidden, rngs=nnx.Rngs(args.seed + 1))
    history = fit_sdm(
        head,
        (np.asarray(features(classifier, x_tr)), y_tr),
        (np.asarray(features(classifier, x_ca)), y_ca),
        key=jax.random.key(args.seed),
        optimizer=optax.adam(args.sdm_lr),
        epochs=args.sdm_epochs,
        batch_size=50,
        alpha=args.alpha,
    )
    calibration = head.calibrate(args.alpha)
    output = head.predict(features(classifier, x_te))
    admitted, prediction = np.asarray(output.admitted), np.asarray(output.prediction)
    unseen_admitted = np.asarray(head.predict(features(classifier, unseen)).admitted)

    n_admitted = int(admitted.sum())
    # The softmax threshold that admits the n_admitted most confident test images (same coverage).
    softmax_admitted, softmax_prediction, confidence, threshold = softmax_threshold(
        classifier(jnp.asarray(x_te)), count=n_admitted
    )
    unseen_softmax_admitted, _, unseen_confidence, _ = softmax_threshold(
        classifier(jnp.asarray(unseen)), threshold=threshold
    )

    results = {
        "alpha": args.alpha,
        "test_accuracy_no_rejection": float(np.mean(softmax_prediction == y_te)),
        "sdm": {
            "coverage": float(admitted.mean()),
            "admitted": n_admitted,
            "admitted_accuracy": admitted_accuracy(admitted, prediction, y_te),
            "unseen_admitted_share": float(unseen_admitted.mean()),
            "best_epoch": history["best_epoch"],
            "q_min": float(calibration.q_min),
            "class_thresholds": np.asarray(calibration.thresholds).tolist(),
            "test_median_q": float(np.median(np.asarray(output.q))),
            "test_median_q_prime": float(np.median(np.asarray(output.q_prime))),
            "test_median_top_output": float(np.median(np.asarray(output.probs).max(1))),
        },
        "softmax_same_coverage": {
            "threshold": float(threshold),
            "coverage": float(softmax_admitted.mean()),
            "admitted": int(softmax_admitted.sum()),
            "admitted_accuracy": admitted_accuracy(softmax_admitted, softmax_prediction, y_te),
            "unseen_admitted_share": float(unseen_softmax_admitted.mean()),
        },
    }
    print(f"no-rejection test accuracy on digits 0-{SEEN - 1}: {results['test_accuracy_no_rejection']:.4f}")
    sdm = results["sdm"]
    print(
        f"SDM calibration: q'_min {sdm['q_min']:.2f}, class thresholds {np.round(sdm['class_thresholds'], 3).tolist()}; "
        f"test medians: q {sdm['test_median_q']:.0f}, q' {sdm['test_median_q_prime']:.2f}, "
        f"top SDM output {sdm['test_median_top_output']:.3f}"
    )
    print(" rule                     | coverage | admitted | admitted accuracy | unseen 5-9 admitted")
    for name, row in (
        ("SDM_HR, alpha = 0.95", results["sdm"]),
        ("softmax, same coverage", results["softmax_same_coverage"]),
    ):
        acc = "-" if row["admitted_accuracy"] is None else f"{row['admitted_accuracy']:.4f}"
        print(
            f" {name:24s} | {row['coverage']:8.3f} | {row['admitted']:8d} | {acc:>17s} | "
            f"{row['unseen_admitted_share']:.3f}"
        )

    quantiles = np.linspace(0.0, 1.0, 21)
    plot_curves(
        args.out / "sdm_digits.png",
        {
            "softmax: seen 0-4 (test)": (quantiles, np.quantile(confidence, quantiles)),
            "softmax: unseen 5-9": (quantiles, np.quantile(unseen_confidence, quantiles)),
            "same-coverage threshold": (quantiles, [min(float(threshold), 1.0)] * len(quantiles)),
        },
        xlabel="quantile",
        ylabel="top softmax probability",
        title="why a softmax threshold admits unseen digits",
    )
    save_json(args.out / "sdm_digits.json", results)
    return results


if __name__ == "__main__":
    main()
