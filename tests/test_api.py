"""The public API is a snapshot (tests/api.txt): adding, removing or renaming a public name is deliberate.

Public means: every module of jaxdl with no ``_``-prefixed part in its dotted name, and in it the names
listed in ``__all__`` (every package declares one). Without ``__all__``: for a plain module, the classes
and functions it defines; for a package, the classes, functions and modules of jaxdl it holds; in both
cases only names not starting with ``_``. Each line of the snapshot is ``module: name (kind)``.

After a deliberate change, regenerate the snapshot from the repository root and commit it:

    python -m tests.test_api --update
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import types
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("api.txt")
REGENERATE = "python -m tests.test_api --update"


def _kind(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return type(obj).__name__


def public_modules() -> list[str]:
    import jaxdl

    names = ["jaxdl"] + [info.name for info in pkgutil.walk_packages(jaxdl.__path__, prefix="jaxdl.")]
    return sorted(n for n in names if not any(part.startswith("_") for part in n.split(".")))


def _origin(obj: object) -> str:
    return obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None) or ""


def public_names(module: types.ModuleType) -> list[str]:
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return sorted(declared)
    if hasattr(module, "__path__"):  # a package: what it re-exports from jaxdl
        keep = lambda obj: _origin(obj).startswith("jaxdl.")  # noqa: E731
    else:  # a plain module: what it defines
        keep = lambda obj: _origin(obj) == module.__name__  # noqa: E731
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj) or isinstance(obj, types.ModuleType))
        and keep(obj)
    )


def api_lines() -> list[str]:
    # Import everything first: importing a submodule sets it as an attribute of its package, so the
    # fallback for packages without __all__ would otherwise depend on what was imported before.
    modules = {name: importlib.import_module(name) for name in public_modules()}
    lines = []
    for name, module in modules.items():
        for attr in public_names(module):
            lines.append(f"{name}: {attr} ({_kind(getattr(module, attr))})")
    return lines


def test_every_package_declares_all():
    missing = [
        name
        for name in public_modules()
        if hasattr(importlib.import_module(name), "__path__")
        and not hasattr(importlib.import_module(name), "__all__")
    ]
    assert not missing, f"packages without __all__: {missing}"


def test_all_names_exist():
    broken = [
        f"{name}.{attr}"
        for name in public_modules()
        for attr in getattr(importlib.import_module(name), "__all__", [])
        if not hasattr(importlib.import_module(name), attr)
    ]
    assert not broken, f"__all__ lists names the module does not have: {broken}"


def test_public_api_matches_the_snapshot():
    want = SNAPSHOT.read_text().splitlines()
    got = api_lines()
    added = sorted(set(got) - set(want))
    removed = sorted(set(want) - set(got))
    assert not (added or removed), (
        "the public API changed.\n  added:\n    "
        + "\n    ".join(added or ["(none)"])
        + "\n  removed:\n    "
        + "\n    ".join(removed or ["(none)"])
        + f"\nIf the change is deliberate, regenerate the snapshot from the repository root with\n"
        f"    {REGENERATE}\nand commit tests/api.txt with the change."
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: {REGENERATE}")
    lines = api_lines()
    SNAPSHOT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} public names to {SNAPSHOT}")
