"""Shared by the benchmarks: full size on an accelerator, tiny with JAXDL_BENCH_SMALL=1 (a CPU check)."""

import os

SMALL = os.environ.get("JAXDL_BENCH_SMALL") == "1"
