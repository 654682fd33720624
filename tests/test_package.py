"""The package as a whole: simulated devices, one version, lazy subpackages (checked in a fresh interpreter)."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jax
import pytest

import jaxdl

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("flax", "orbax", "tensorflow_datasets", "tensorflow")


def test_eight_simulated_devices():
    assert jax.device_count() == 8


def test_version_is_written_once_and_read_by_the_build():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|a\d+|b\d+|rc\d+)?", jaxdl.__version__)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "jaxdl/__init__.py"


def _top_level_modules_after(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after running ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def loaded() -> dict[str, set[str]]:
    # one interpreter per statement; `import jaxdl` is the cheap one, `jaxdl.optim` pays for jax + optax
    statements = ("import jaxdl", "import jaxdl.optim", "import jaxdl.probes", "import jaxdl.nn.sdm")
    return {s: _top_level_modules_after(s) for s in statements}


def test_import_jaxdl_loads_no_subpackage_and_nothing_heavy(loaded):
    modules = loaded["import jaxdl"]
    assert "jaxdl" in modules
    assert not modules & {*HEAVY, "jax", "optax"}, sorted(modules & {*HEAVY, "jax", "optax"})


def test_import_jaxdl_optim_loads_optax_but_no_flax_orbax_or_tfds(loaded):
    modules = loaded["import jaxdl.optim"]
    assert {"jax", "optax"} <= modules
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_import_jaxdl_probes_loads_no_flax_orbax_or_tfds(loaded):
    modules = loaded["import jaxdl.probes"]
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_import_jaxdl_nn_sdm_loads_flax_but_no_orbax_or_tfds(loaded):
    # the SDM head saves through jaxdl.checkpoint, which imports orbax only when a Checkpointer is made
    modules = loaded["import jaxdl.nn.sdm"]
    assert "flax" in modules
    assert not modules & {"orbax", "tensorflow_datasets", "tensorflow"}


def _private_imports(path: Path) -> list[str]:
    """Imports of a `_`-prefixed module of another package (``optax._src``, ``flax.nnx._x``) in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            top, *rest = name.split(".")
            if top != "jaxdl" and any(part.startswith("_") and part != "__future__" for part in rest):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


def test_no_private_modules_of_dependencies_are_imported():
    # ruff's TID251 bans a fixed list (jax._src, optax._src, ...); this catches any other `_` module.
    found = [hit for path in sorted((ROOT / "jaxdl").rglob("*.py")) for hit in _private_imports(path)]
    assert not found, "imports of private modules of other packages:\n" + "\n".join(found)


def test_subpackages_load_on_first_attribute_access():
    code = (
        "import sys, jaxdl\n"
        "assert 'jaxdl.parallel' not in sys.modules\n"
        "jaxdl.parallel.TrainState\n"
        "assert 'jaxdl.parallel' in sys.modules and 'jaxdl.checkpoint' not in sys.modules\n"
        "try:\n    jaxdl.nope\nexcept AttributeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "module 'jaxdl' has no attribute 'nope'" in out.stdout


def test_dir_and_all_name_every_subpackage():
    subpackages = {"checkpoint", "data", "losses", "nn", "optim", "parallel", "probes"}
    assert subpackages <= set(jaxdl.__all__)
    assert subpackages <= set(dir(jaxdl))
    for name in jaxdl.__all__:
        assert getattr(jaxdl, name) is not None
