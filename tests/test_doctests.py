"""Every `>>>` example in jaxdl's docstrings runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import jaxdl

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(jaxdl.__path__, prefix="jaxdl.")
    if not info.name.split(".")[-1].startswith("_")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
