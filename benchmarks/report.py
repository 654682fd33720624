"""Turn a pytest-benchmark JSON file into the Markdown tables of benchmarks/RESULTS.md.

    python -m benchmarks.report results.json

Benchmarks are tabled by their pytest-benchmark `group` (or test function). Optimizer steps are reported against their byte floor (buffers x 4 bytes x parameters /
bandwidth, the bandwidth measured by `test_copy_bandwidth` in the same run) and against
`optax.adam`. Every other benchmark is listed with its median and the extra_info it recorded.
"""

import json
import sys
from collections import defaultdict


def _median_ms(bench):
    return bench["stats"]["median"] * 1e3


def optim_table(benches):
    """Optimizer steps per layout, against torch's fused Adam (x its buffers / 7 is issue #13's
    target) and against the byte floor at the JAX and the torch copy bandwidth."""
    by_size = defaultdict(dict)
    bandwidth = {}
    for b in benches:
        info = b["extra_info"]
        if info["size"] in ("bandwidth", "torch bandwidth"):
            bandwidth[info["size"]] = 2 * 4 * info["params"] / b["stats"]["median"]
            continue
        by_size[info["size"]][info.get("name", b["name"])] = b
    jax_bw, torch_bw = (
        bandwidth.get("bandwidth", float("nan")),
        bandwidth.get("torch bandwidth", float("nan")),
    )
    lines = [
        f"Copy bandwidth (3.3 GB, read + write): JAX donated y = 2x {jax_bw / 1e12:.2f} TB/s, "
        f"torch in-place mul_ {torch_bw / 1e12:.2f} TB/s; floor = buffers x 4 B x params / bandwidth."
    ]
    for size, cases in by_size.items():
        n = next(iter(cases.values()))["extra_info"]["params"]
        torch_ms = _median_ms(cases["torch fused Adam"]) if "torch fused Adam" in cases else float("nan")
        lines += [
            f"\n**{size}** ({n / 1e6:.1f}M parameters)\n",
            "| step | median ms | buffers | kernels | first call s | × torch fused Adam | target | "
            "× floor (JAX copy) | × floor (torch copy) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, b in sorted(cases.items(), key=lambda kv: _median_ms(kv[1])):
            info = b["extra_info"]
            buffers, ms = info["buffers"], _median_ms(b)
            floor = buffers * 4 * info["params"] * 1e3
            kernels = info.get("kernels", "—")
            first = f"{info['first_call_s']:.1f}" if "first_call_s" in info else "—"
            lines.append(
                f"| {label} | {ms:.3f} | {buffers} | {kernels} | {first} | {ms / torch_ms:.2f} | "
                f"{buffers / 7:.2f} | {ms / (floor / jax_bw):.2f} | {ms / (floor / torch_bw):.2f} |"
            )
    return "\n".join(lines)


def generic_table(group, benches):
    lines = [f"\n**{group}**\n", "| benchmark | median ms | details |", "|---|---:|---|"]
    for b in benches:
        info = b["extra_info"]
        details = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        lines.append(f"| {b['name']} | {_median_ms(b):.3f} | {details} |")
    return "\n".join(lines)


def main(path):
    data = json.load(open(path))
    machine = data["machine_info"]
    print(
        f"Run {data['datetime']}, {machine.get('cpu', {}).get('brand_raw', '')}, Python {machine['python_version']}"
    )
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"] or b["name"].split("[")[0]].append(b)  # pytest-benchmark's group, else the test
    for group, benches in groups.items():
        print(optim_table(benches) if group == "optim" else generic_table(group, benches))


if __name__ == "__main__":
    main(sys.argv[1])
