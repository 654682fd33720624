"""Every `>>>` example in jaxdl's docstrings runs and prints what it says.

The examples of every module run, private ones (``jaxdl.probes._operators``) and the package itself
included; the every-public-name-has-an-example rule applies to public modules only.
"""

import doctest
import importlib
import pkgutil

import pytest

import jaxdl

ALL_MODULES = sorted(
    ["jaxdl", *(info.name for info in pkgutil.walk_packages(jaxdl.__path__, prefix="jaxdl."))]
)
MODULES = [name for name in ALL_MODULES if not name.split(".")[-1].startswith("_")]


def test_private_modules_are_collected():
    assert {"jaxdl._typing", "jaxdl.probes._operators"} <= set(ALL_MODULES) - set(MODULES)


@pytest.mark.parametrize("name", ALL_MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_and_class_has_an_example(name):
    module = importlib.import_module(name)
    missing = [
        attr
        for attr, obj in vars(module).items()
        if not attr.startswith("_")
        and callable(obj)
        and getattr(obj, "__module__", None) == name
        and ">>>" not in (obj.__doc__ or "")
    ]
    assert not missing, f"{name}: no `>>>` example in the docstring of {', '.join(missing)}"
