"""The jaxdl.data rows of the bad-input catalogue (/work/shared/reference/bad-inputs.md, group `data`),
and more cases of the same kinds: each raises the named error type with a message naming the argument,
before any XLA computation, or returns the right answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.data import (
    ArraySource,
    Loader,
    SyntheticImageSource,
    image_classification,
    normalize_images,
    one_hot,
    prepare_image_folder,
)


class Case(NamedTuple):
    call: Callable[..., object]  # takes the tmp_path fixture
    error: type[BaseException]
    match: str  # a regex that names the argument and what was expected


def ten() -> ArraySource:
    return ArraySource({"x": np.arange(10)})


def pixels(dtype, value=0, shape=(2, 4, 4, 1)) -> np.ndarray:
    return np.full(shape, value, dtype)


CASES = {
    # --- rows of the catalogue ---
    "Loader(batch_size=0)": Case(
        lambda tmp: Loader(ten(), batch_size=0), ValueError, "batch_size must be a positive integer, got 0"
    ),
    "Loader(batch_size=2.0)": Case(
        lambda tmp: Loader(ten(), batch_size=2.0),
        ValueError,
        "batch_size must be a positive integer, got 2.0",
    ),
    "Loader batch 20 > 10 examples": Case(
        lambda tmp: Loader(ten(), batch_size=20),
        ValueError,
        "source of 10 examples gives no full global batch of 20",
    ),
    "ArraySource unequal lengths": Case(
        lambda tmp: ArraySource({"x": np.zeros(10), "y": np.zeros(9)}),
        ValueError,
        r"arrays must be a non-empty mapping of equal-length arrays, got lengths \{'x': 10, 'y': 9\}",
    ),
    "ArraySource({})": Case(
        lambda tmp: ArraySource({}), ValueError, r"arrays must be a non-empty mapping.*\{\}"
    ),
    "Loader.batch(epoch=0, index=99)": Case(
        lambda tmp: Loader(ten(), batch_size=2).batch(0, 99), IndexError, "batch index 99 out of range for 5"
    ),
    "Loader(keys=['nope'])": Case(
        lambda tmp: next(Loader(ten(), batch_size=2, keys=["nope"]).epoch(0)),
        KeyError,
        r"keys \['nope'\] are not fields of the source: \['x'\]",
    ),
    "Loader epoch=-1 (was cryptic)": Case(
        lambda tmp: Loader(ten(), batch_size=2).epoch(-1),
        ValueError,
        "epoch must be a non-negative integer, got -1",
    ),
    "normalize_images(float images)": Case(
        lambda tmp: normalize_images(pixels(np.float32)),
        TypeError,
        "images must hold integer pixels.*float32",
    ),
    "one_hot(float labels)": Case(
        lambda tmp: one_hot(np.array([0.0, 1.0]), 2), TypeError, "labels must be integers, got dtype float64"
    ),
    "one_hot(num_classes=0)": Case(
        lambda tmp: one_hot(np.array([0, 1]), 0), ValueError, "num_classes must be a positive integer, got 0"
    ),
    "one_hot label 5 with 3 classes (was silently zero)": Case(
        lambda tmp: one_hot(np.array([0, 5]), 3),
        ValueError,
        r"labels must lie in \[0, num_classes\) = \[0, 3\).*5",
    ),
    "image_classification('not_a_dataset')": Case(
        lambda tmp: image_classification("not_a_dataset", "train", data_dir=str(tmp)),
        ValueError,
        "not_a_dataset",
    ),
    "image_classification('mnist', 'validation') stand-in": Case(
        lambda tmp: image_classification("mnist", "validation", data_dir=str(tmp)),
        ValueError,
        r"synthetic stand-in for 'mnist' has splits \['test', 'train'\], got split='validation'",
    ),
    "image_classification(fallback=None) without data": Case(
        lambda tmp: image_classification("mnist", "train", data_dir=str(tmp), fallback=None),
        FileNotFoundError,
        "mnist/train is not prepared under .*tfds build mnist",
    ),
    "image_classification(fallback='zeros')": Case(
        lambda tmp: image_classification("mnist", "train", fallback="zeros"),
        ValueError,
        "fallback must be 'synthetic' or None, got 'zeros'",
    ),
    # --- more of the same kinds ---
    "Loader(seed=-1)": Case(
        lambda tmp: Loader(ten(), batch_size=2, seed=-1),
        ValueError,
        "seed must be a non-negative integer, got -1",
    ),
    "Loader(seed=1.5)": Case(
        lambda tmp: Loader(ten(), batch_size=2, seed=1.5),
        TypeError,
        "seed must be a non-negative integer, got 1.5",
    ),
    "Loader.epoch(1.5)": Case(
        lambda tmp: Loader(ten(), batch_size=2).epoch(1.5),
        TypeError,
        "epoch must be a non-negative integer, got 1.5",
    ),
    "Loader.order(-2)": Case(
        lambda tmp: Loader(ten(), batch_size=2).order(-2), ValueError, "epoch must be a non-negative integer"
    ),
    "Loader.stream(start_step=-3)": Case(
        lambda tmp: Loader(ten(), batch_size=2).stream(start_step=-3),
        ValueError,
        "start_step must be a non-negative integer, got -3",
    ),
    "Loader(source=5)": Case(
        lambda tmp: Loader(5, batch_size=2),
        TypeError,
        r"source must support len\(source\) and source\[i\].*int",
    ),
    "Loader(keys='x') string": Case(
        lambda tmp: Loader(ten(), batch_size=2, keys="x"), TypeError, "keys must be a sequence of field names"
    ),
    "Loader(process_index=2, process_count=2)": Case(
        lambda tmp: Loader(ten(), batch_size=2, process_index=2, process_count=2),
        ValueError,
        "0 <= process_index < process_count, got process_index=2, process_count=2",
    ),
    "Loader(drop_remainder=False) on 2 processes": Case(
        lambda tmp: Loader(ten(), batch_size=2, process_index=0, process_count=2, drop_remainder=False),
        ValueError,
        "drop_remainder=False needs process_count == 1",
    ),
    "ArraySource(an array, not a mapping)": Case(
        lambda tmp: ArraySource(np.zeros((3, 2))), TypeError, "arrays must be a mapping.*ndarray"
    ),
    "ArraySource({'x': 3.0}) scalar field": Case(
        lambda tmp: ArraySource({"x": np.arange(3), "y": 3.0}),
        TypeError,
        r"leading example axis; fields \['y'\]",
    ),
    "normalize_images(mean of 3 channels, images of 1)": Case(
        lambda tmp: normalize_images(pixels(np.uint8), mean=[0.5, 0.5, 0.5]),
        ValueError,
        r"mean must be a scalar or have shape \(1,\).*got shape \(3,\)",
    ),
    "normalize_images(std=0)": Case(
        lambda tmp: normalize_images(pixels(np.uint8), std=0.0), ValueError, "std must be positive"
    ),
    "normalize_images(int32 pixel 300)": Case(
        lambda tmp: normalize_images(pixels(np.int32, 300)), ValueError, r"pixels in \[0, 255\].*300"
    ),
    "normalize_images(scalar)": Case(
        lambda tmp: normalize_images(np.uint8(3)), ValueError, "images must have at least a channel axis"
    ),
    "one_hot(num_classes=2.0)": Case(
        lambda tmp: one_hot(np.array([0, 1]), 2.0),
        ValueError,
        "num_classes must be a positive integer, got 2.0",
    ),
    "one_hot negative label": Case(
        lambda tmp: one_hot(jnp.array([-1, 0]), 2), ValueError, r"labels must lie in \[0, num_classes\).*-1"
    ),
    "SyntheticImageSource(image_shape=(28, 28))": Case(
        lambda tmp: SyntheticImageSource(4, (28, 28), 10),
        ValueError,
        r"image_shape must be \(height, width, channels\)",
    ),
    "SyntheticImageSource[4] of 4": Case(
        lambda tmp: SyntheticImageSource(4, (2, 2, 1), 2)[4],
        IndexError,
        "index 4 out of range for a source of length 4",
    ),
    "prepare_image_folder(missing root)": Case(
        lambda tmp: prepare_image_folder(tmp / "missing", "x", data_dir=tmp),
        FileNotFoundError,
        "root must be a folder",
    ),
    "prepare_image_folder(name='My-Set')": Case(
        lambda tmp: prepare_image_folder(tmp, "My-Set", data_dir=tmp),
        ValueError,
        "name must be a non-empty tfds name",
    ),
    "prepare_image_folder(an empty folder)": Case(
        lambda tmp: prepare_image_folder(tmp, "x", data_dir=tmp / "out"),
        ValueError,
        "no images .* found under",
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_refused_clearly(case, tmp_path):
    with pytest.raises(case.error, match=case.match):
        case.call(tmp_path)


def test_out_of_range_label_under_jit_gives_nan_rows_not_zeros():
    # Under a trace the values cannot be checked: the bad row must poison the loss, not vanish from it.
    encoded = jax.jit(one_hot, static_argnums=1)(jnp.array([2, 3, -1, 0]), 3)
    np.testing.assert_array_equal(encoded[0], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(encoded[3], [1.0, 0.0, 0.0])
    assert np.isnan(encoded[1]).all() and np.isnan(encoded[2]).all()
    loss = -(encoded * jnp.log(jnp.full(3, 1 / 3))).sum()
    assert np.isnan(loss)
