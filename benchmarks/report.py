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
    by_size = defaultdict(dict)
    bandwidth = None
    for b in benches:
        name = b["name"].split("[")[0]
        if name == "test_copy_bandwidth":
            bandwidth = 2 * 4 * b["extra_info"]["params"] / b["stats"]["median"]
            continue
        label = "torch fused Adam" if "torch" in name else b["param"].split("-")[0]
        by_size[b["extra_info"]["size"]][label] = b
    lines = [
        f"Copy bandwidth (3.3 GB, donated): {bandwidth / 1e12:.2f} TB/s; floor = buffers x 4 B x params / bandwidth."
    ]
    for size, cases in by_size.items():
        n = next(iter(cases.values()))["extra_info"]["params"]
        adam_ms = _median_ms(cases["optax.adam"]) if "optax.adam" in cases else float("nan")
        lines += [
            f"\n**{size}** ({n / 1e6:.1f}M parameters)\n",
            "| step | median ms | buffers | floor ms | × floor | × optax.adam |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, b in sorted(cases.items(), key=lambda kv: _median_ms(kv[1])):
            buffers = b["extra_info"]["buffers"]
            floor_ms = buffers * 4 * b["extra_info"]["params"] / bandwidth * 1e3
            ms = _median_ms(b)
            lines.append(
                f"| {label} | {ms:.3f} | {buffers} | {floor_ms:.3f} | {ms / floor_ms:.2f} | {ms / adam_ms:.2f} |"
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
