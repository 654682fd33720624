"""What every example shares: flags, platform selection, a progress bar, JSON and PNG output.

Each example builds its parser with `base_parser`, calls `setup(args)` once, wraps its
training loop in `progress`, and writes results with `save_json` / `plot_curves`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def base_parser(description: str, *, steps: int, batch_size: int | None = None) -> argparse.ArgumentParser:
    """A parser with the flags every example takes: --steps, --seed, --out, --platform."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help="training steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--platform",
        choices=("cpu", "gpu", "tpu"),
        default=None,
        help="force a JAX platform (default: whatever JAX finds)",
    )
    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size, help="(default: %(default)s)")
    return parser


def setup(args: argparse.Namespace) -> None:
    """Select the platform before JAX starts, create the output folder, and say where we run."""
    if args.platform is not None:
        os.environ["JAX_PLATFORMS"] = args.platform
    import jax

    args.out.mkdir(parents=True, exist_ok=True)
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}: {len(jax.devices())} device(s)")


def progress(iterable: Iterable, *, total: int | None = None, desc: str = ""):
    """A tqdm progress bar, or the plain iterable when tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, mininterval=1.0)


def save_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float))
    print(f"wrote {path}")


def plot_curves(
    path: Path,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
) -> None:
    """One line per curve name, each given as (x, y). Skipped with a message without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: not writing {path}")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def load_digits(seed: int, *, test_fraction: float = 0.25, limit: int | None = None) -> dict:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), split per class.

    The data ship inside the scikit-learn wheel (UCI optdigits test set: 8x8 blocks of 4x4 pixel counts,
    values 0..16), so nothing downloads. Each class is shuffled with ``seed`` and its first
    ``test_fraction`` goes to the test split, so both splits keep the class balance. ``limit`` keeps that
    many images (drawn the same way) for smoke runs.

    Returns ``{"x_train", "y_train", "x_test", "y_test"}``: images float32 (n, 8, 8) in [0, 1], labels int32.
    """
    import numpy as np

    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:
        raise ImportError("the digits examples need scikit-learn: pip install 'jaxdl[examples]'") from err
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    if limit is not None:
        order = order[:limit]
    train, test = [], []
    for c in np.unique(labels[order]):
        rows = order[labels[order] == c]
        cut = int(round(test_fraction * len(rows)))
        test.append(rows[:cut])
        train.append(rows[cut:])
    train_rows, test_rows = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    return {
        "x_train": images[train_rows],
        "y_train": labels[train_rows],
        "x_test": images[test_rows],
        "y_test": labels[test_rows],
    }


def softmax_threshold(logits, *, threshold: float | None = None, count: int | None = None):
    """The softmax-threshold baseline of selective classification: admit when max softmax >= threshold.

    ``logits`` is ``(n, C)``. Give the ``threshold`` itself (e.g. the target accuracy α, as a user of
    plain softmax would), or ``count``: the threshold that admits the ``count`` most confident rows
    (ties admitted together; +inf for 0), to compare rules at the same coverage.

    Returns ``(admitted, prediction, confidence, threshold)``: NumPy arrays of the rule's decision, the
    argmax and the top softmax probability per row, and the threshold used.
    """
    import numpy as np

    if (threshold is None) == (count is None):
        raise ValueError("softmax_threshold: give exactly one of threshold and count")
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    confidence, prediction = probs.max(axis=1), probs.argmax(axis=1)
    if count is not None:
        threshold = float(np.sort(confidence)[::-1][count - 1]) if count else float("inf")
    return confidence >= threshold, prediction, confidence, threshold
