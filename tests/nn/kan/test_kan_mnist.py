"""examples/kan_mnist.py reads real tfds records through `tfds.data_source` (mocked, no download)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _load_example():
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # the example imports its sibling `_common`
    spec = importlib.util.spec_from_file_location("kan_mnist_example", EXAMPLES / "kan_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_kan_mnist_trains_on_tfds_mock_data(tmp_path):
    example = _load_example()
    argv = ["--dataset", "fashion_mnist", "--steps", "2", "--batch-size", "8", "--eval-examples", "16"]
    with tfds.testing.mock_data(num_examples=32):
        results = example.main(argv + ["--models", "kan", "--out", str(tmp_path)])
    assert results["synthetic"] is False  # the tfds path, not the synthetic stand-in
    assert 0.0 <= results["models"]["kan"]["test_accuracy"] <= 1.0
    assert results["models"]["kan"]["params"] == 784 * 64 * 9 + 64 + 64 * 10 * 9 + 10
    assert (tmp_path / "kan_mnist.json").exists()
