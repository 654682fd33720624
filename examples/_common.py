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
