"""Selective classification with an SDM output layer versus plain softmax thresholding.

A small MLP classifier is trained on a Gaussian mixture with label noise (or on a tfds image dataset
with --dataset); its penultimate features feed an SDM head (Schmaltz, "Similarity-Distance-Magnitude
Activations", arXiv:2509.12760) fitted on a training split and calibrated on a calibration split.
On held-out data, for each target accuracy α, the SDM_HR rule and the softmax rule "admit if
max softmax >= α" are scored as in the paper (§3.2): accuracy of the admitted points per true class
and per predicted class (the pass criterion is that both reach α), and the admitted fraction. Far
away and feature-shuffled inputs measure how much out-of-distribution data each rule admits.

    python examples/sdm_selective.py
    python examples/sdm_selective.py --dataset mnist   # tfds data if prepared, else an announced stand-in
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import base_parser, plot_curves, progress, save_json, setup, softmax_threshold
from flax import nnx

from jaxdl.nn.sdm import SDMHead, fit_sdm

ALPHAS = (0.8, 0.85, 0.9, 0.925, 0.95)
SMOKE_ARGS = [
    "--steps",
    "30",
    "--examples",
    "600",
    "--sdm-epochs",
    "2",
    "--hidden",
    "16",
    "--sdm-hidden",
    "16",
]


def gaussian_mixture(rng, n, num_classes, dim, noise, noisy_class_noise):
    """Overlapping Gaussian classes; every label is redrawn with prob. ``noise`` and class 1's with more."""
    means = np.random.default_rng(1234).normal(size=(num_classes, dim)) * 0.9
    labels = rng.integers(0, num_classes, size=n)
    x = means[labels] + rng.normal(size=(n, dim))
    redraw = rng.uniform(size=n) < np.where(labels == 1, noisy_class_noise, noise)
    labels = np.where(redraw, rng.integers(0, num_classes, size=n), labels)
    return x.astype(np.float32), labels.astype(np.int32)


def tfds_arrays(name, split, n, seed):
    from jaxdl.data.tfds import image_classification

    source, info = image_classification(name, split, fallback="synthetic", seed=seed)
    rows = np.random.default_rng(seed).permutation(len(source))[:n]
    images = np.stack([source[int(i)]["image"] for i in rows]).reshape(len(rows), -1) / 255.0
    labels = np.asarray([source[int(i)]["label"] for i in rows], np.int32)
    return images.astype(np.float32), labels, info.num_classes


class MLP(nnx.Module):
    def __init__(self, dim, hidden, num_classes, *, rngs):
        self.layer1 = nnx.Linear(dim, hidden, rngs=rngs)
        self.layer2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, num_classes, rngs=rngs)

    def features(self, x):
        return nnx.relu(self.layer2(nnx.relu(self.layer1(x))))

    def __call__(self, x):
        return self.out(self.features(x))


def train_classifier(model, x, y, *, steps, batch_size, seed):
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xb, yb):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    for _ in progress(range(steps), total=steps, desc="classifier"):
        rows = rng.integers(0, len(y), size=batch_size)
        step(model, optimizer, x[rows], y[rows])


def selective_scores(admitted, prediction, labels, num_classes):
    """The paper's metric: min over classes of the admitted accuracy per true / predicted class."""

    def accuracy(mask):
        return (
            float(np.mean(prediction[mask] == labels[mask])) if mask.any() else 1.0
        )  # nothing admitted passes

    return {
        "coverage": float(admitted.mean()),
        "marginal": accuracy(admitted),
        "min_class": min(accuracy(admitted & (labels == c)) for c in range(num_classes)),
        "min_prediction": min(accuracy(admitted & (prediction == c)) for c in range(num_classes)),
        # The smallest per-class admitted count: the accuracies above are only as good as their sample.
        "min_admitted": int(min(np.sum(admitted & (labels == c)) for c in range(num_classes))),
    }


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], steps=3000, batch_size=128)
    parser.add_argument("--dataset", default=None, help="a tfds image dataset (default: a Gaussian mixture)")
    parser.add_argument("--examples", type=int, default=9000, help="examples in all, split 1/3 each")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--label-noise", type=float, default=0.02)
    parser.add_argument("--noisy-class-noise", type=float, default=0.06, help="label noise of class 1")
    parser.add_argument("--hidden", type=int, default=64, help="classifier width")
    parser.add_argument("--sdm-hidden", type=int, default=256, help="SDM exemplar dimension M")
    parser.add_argument("--sdm-epochs", type=int, default=20)
    parser.add_argument("--sdm-lr", type=float, default=1e-4)
    args = parser.parse_args(argv)
    setup(args)
    rng = np.random.default_rng(args.seed)

    if args.dataset is None:
        num_classes = args.classes
        x, y = gaussian_mixture(
            rng, args.examples, num_classes, args.dim, args.label_noise, args.noisy_class_noise
        )
    else:
        x, y, num_classes = tfds_arrays(args.dataset, "train", args.examples, args.seed)
    third = len(y) // 3
    (x_tr, y_tr), (x_ca, y_ca), (x_te, y_te) = (
        (x[i : i + third], y[i : i + third]) for i in (0, third, 2 * third)
    )

    classifier = MLP(x.shape[1], args.hidden, num_classes, rngs=nnx.Rngs(args.seed))
    train_classifier(classifier, x_tr, y_tr, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    features = nnx.jit(lambda m, x: m.features(x))

    head = SDMHead(args.hidden, num_classes, hidden=args.sdm_hidden, rngs=nnx.Rngs(args.seed + 1))
    history = fit_sdm(
        head,
        (np.asarray(features(classifier, x_tr)), y_tr),
        (np.asarray(features(classifier, x_ca)), y_ca),
        key=jax.random.key(args.seed),
        optimizer=optax.adam(args.sdm_lr),
        epochs=args.sdm_epochs,
        batch_size=50,
    )

    logits = classifier(jnp.asarray(x_te))
    far = (rng.normal(size=x_te.shape) * 4 * x_te.std()).astype(np.float32)
    shuffled = np.stack([row[rng.permutation(x_te.shape[1])] for row in x_te])
    results = {"alphas": list(ALPHAS), "sdm": [], "softmax": [], "best_epoch": history["best_epoch"]}
    for alpha in ALPHAS:
        calibration = head.calibrate(alpha)
        output = head.predict(features(classifier, x_te))
        sdm = selective_scores(np.asarray(output.admitted), np.asarray(output.prediction), y_te, num_classes)
        sdm["q_min"] = float(calibration.q_min)
        sdm["lower"] = selective_scores(
            np.asarray(output.admitted_lower), np.asarray(output.prediction), y_te, num_classes
        )
        plain = selective_scores(*softmax_threshold(logits, threshold=alpha)[:2], y_te, num_classes)
        results["sdm"].append(sdm)
        results["softmax"].append(plain)
        if alpha == 0.9:
            for name, inputs in (("far", far), ("shuffled", shuffled)):
                sdm_admits = np.asarray(head.predict(features(classifier, inputs)).admitted).mean()
                soft_admits = softmax_threshold(classifier(jnp.asarray(inputs)), threshold=alpha)[0].mean()
                results[f"{name}_admitted_at_0.9"] = {"sdm": float(sdm_admits), "softmax": float(soft_admits)}

    no_reject = np.mean(np.asarray(logits).argmax(1) == y_te)
    print(f"no-reject accuracy {no_reject:.3f} on {len(y_te)} held-out points")
    print(" alpha | rule         | q'_min | coverage | marginal | min class | min pred | min n | passes")
    for alpha, sdm, plain in zip(ALPHAS, results["sdm"], results["softmax"], strict=True):
        for name, row in (("SDM_HR", sdm), ("SDM_HR lower", sdm["lower"]), ("softmax", plain)):
            passes = min(row["min_class"], row["min_prediction"]) >= alpha
            q_min = f"{sdm['q_min']:6.1f}" if name.startswith("SDM") else "     -"
            print(
                f" {alpha:5.3f} | {name:12s} | {q_min} | {row['coverage']:8.3f} | {row['marginal']:8.3f} | "
                f"{row['min_class']:9.3f} | {row['min_prediction']:8.3f} | {row['min_admitted']:5d} | {passes}"
            )
    for name in ("far", "shuffled"):
        print(f"{name} inputs admitted at alpha 0.9: {results[f'{name}_admitted_at_0.9']}")

    plot_curves(
        args.out / "sdm_selective_accuracy.png",
        {
            "SDM_HR min class accuracy": (ALPHAS, [r["min_class"] for r in results["sdm"]]),
            "softmax min class accuracy": (ALPHAS, [r["min_class"] for r in results["softmax"]]),
            "target alpha": (ALPHAS, list(ALPHAS)),
        },
        xlabel="alpha",
        ylabel="admitted accuracy (worst class)",
        title="SDM vs softmax thresholding",
    )
    plot_curves(
        args.out / "sdm_selective_coverage.png",
        {
            "SDM_HR": (ALPHAS, [r["coverage"] for r in results["sdm"]]),
            "SDM_HR lower": (ALPHAS, [r["lower"]["coverage"] for r in results["sdm"]]),
            "softmax": (ALPHAS, [r["coverage"] for r in results["softmax"]]),
        },
        xlabel="alpha",
        ylabel="admitted fraction",
        title="coverage",
    )
    save_json(args.out / "sdm_selective.json", results)
    return results


if __name__ == "__main__":
    main()
