"""Smoke test: every example in examples/ runs end to end at tiny size (its SMOKE_ARGS)."""

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def load(path: Path):
    """Import an example by file name, as `python examples/<name>.py` would see its siblings."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # so `from _common import ...` resolves
    spec = importlib.util.spec_from_file_location(f"examples_smoke_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_exist():
    assert SCRIPTS, f"no examples found in {EXAMPLES}"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_runs(script, tmp_path):
    module = load(script)
    assert isinstance(module.SMOKE_ARGS, list), f"{script.name} must define SMOKE_ARGS: list[str]"
    results = module.main(module.SMOKE_ARGS + ["--out", str(tmp_path)])
    assert isinstance(results, dict) and results, f"{script.name}: main() must return its headline numbers"
    assert any(tmp_path.iterdir()), f"{script.name} wrote nothing to --out"
