"""Opt-in per-test cost report: wall time, process CPU time and XLA compile time.

Enabled by `JAXDL_TEST_TIMING=path.json` (the README's development section shows the
command). Wall time alone depends on the machine and on what else runs on it; CPU seconds
and the share spent in XLA compilation say where a slow test's time goes. Under
pytest-xdist each worker writes `path.<worker>.json`.
"""

import json
import os
import time

import jax
import pytest

_COMPILE_EVENT = "backend_compile_duration"


class TimingPlugin:
    def __init__(self, path: str):
        self.path = path
        self.records: dict[str, dict[str, float]] = {}
        self._compile = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_) -> None:
        if event.endswith(_COMPILE_EVENT):
            self._compile += duration

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        compile_before, cpu_before, wall_before = self._compile, os.times(), time.perf_counter()
        yield
        cpu_after = os.times()
        self.records[item.nodeid] = {
            "wall": time.perf_counter() - wall_before,
            "cpu": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
            "compile": self._compile - compile_before,
        }

    def pytest_sessionfinish(self, session):
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        path = f"{self.path}.{worker}.json" if worker else self.path
        with open(path, "w") as f:
            json.dump(self.records, f, indent=0)
