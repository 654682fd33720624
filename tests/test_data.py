"""Tests for jaxdl.data.tfds: the real tfds reading path on mock data, the loader's order and sharding."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdl.data import (
    ArraySource,
    Loader,
    SyntheticImageSource,
    image_classification,
    normalize_images,
    one_hot,
)

SHAPES = {"mnist": ((28, 28, 1), 10), "fashion_mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10)}


class CountingSource:
    """A source whose example i is {"index": i}; counts reads to check the loader reads only what it needs."""

    def __init__(self, n):
        self.n, self.reads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        return {"index": np.asarray(i), "name": np.asarray(f"ex{i}")}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_real_tfds_path_on_mock_data(name):
    image_shape, num_classes = SHAPES[name]
    with tfds.testing.mock_data(num_examples=20):
        source, info = image_classification(name, "train", fallback=None)
        assert not info.synthetic
        assert (info.num_classes, info.image_shape, info.num_examples) == (num_classes, image_shape, 20)
        assert len(source) == 20
        loader = Loader(source, batch_size=8, seed=3)
        batches = list(loader.epoch(1))
        order = loader.order(1)
        expected = [source[int(i)] for i in order[:16]]
    assert len(loader) == len(batches) == 2
    for batch in batches:
        assert set(batch) == {"image", "label"}  # cifar10's string "id" is dropped
        assert batch["image"].shape == (8, *image_shape) and batch["image"].dtype == np.uint8
        assert batch["label"].shape == (8,) and np.issubdtype(batch["label"].dtype, np.integer)
    np.testing.assert_array_equal(
        np.concatenate([b["image"] for b in batches]), np.stack([e["image"] for e in expected])
    )
    np.testing.assert_array_equal(
        np.concatenate([b["label"] for b in batches]), np.stack([e["label"] for e in expected])
    )


def test_missing_data_falls_back_to_announced_synthetic(tmp_path, capsys):
    source, info = image_classification("cifar10", "test", data_dir=str(tmp_path), seed=1)
    notice = capsys.readouterr().out
    assert "SYNTHETIC" in notice and "cifar10/test" in notice and str(tmp_path) in notice
    assert info.synthetic and info.num_examples == len(source) == 10_000
    assert info.image_shape == (32, 32, 3) and info.num_classes == 10
    example = source[17]
    assert example["image"].shape == (32, 32, 3) and example["image"].dtype == np.uint8
    np.testing.assert_array_equal(example["image"], source[17]["image"])  # random access is deterministic


def test_missing_data_without_fallback_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="mnist/train is not prepared.*tfds build mnist"):
        image_classification("mnist", "train", data_dir=str(tmp_path), fallback=None)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "mnist", "split": "train", "fallback": "zeros"}, ValueError, "fallback must be"),
        ({"name": "mnist", "split": "validation"}, ValueError, "synthetic stand-in for 'mnist' has splits"),
        ({"name": "no_such_dataset_xyz", "split": "train"}, ValueError, "no_such_dataset_xyz"),
    ],
)
def test_image_classification_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        image_classification(data_dir=str(tmp_path), **kwargs)


def test_synthetic_classes_are_learnable_not_trivial():
    shape, k = (28, 28, 1), 10
    train = SyntheticImageSource(1000, shape, k, seed=0, split="train")
    test = SyntheticImageSource(300, shape, k, seed=0, split="test")
    assert not np.array_equal(train[0]["image"], test[0]["image"])

    def arrays(source):
        examples = [source[i] for i in range(len(source))]
        images = np.stack([e["image"] for e in examples]).reshape(len(examples), -1) / 255.0
        return images, np.array([e["label"] for e in examples])

    images, labels = arrays(train)
    assert set(labels) == set(range(k))
    # Class means of the train split classify the test split (the templates are shared) well above
    # chance (0.1), but not perfectly: a model has something to learn.
    means = np.stack([images[labels == c].mean(0) for c in range(k)])
    test_images, test_labels = arrays(test)
    accuracy = (((test_images[:, None] - means[None]) ** 2).sum(-1).argmin(1) == test_labels).mean()
    assert 0.5 < accuracy < 0.95


def test_epochs_are_permutations_deterministic_per_seed():
    source = CountingSource(50)
    loader = Loader(source, batch_size=10, seed=7, drop_remainder=False)
    epoch0 = np.concatenate([b["index"] for b in loader.epoch(0)])
    epoch1 = np.concatenate([b["index"] for b in loader.epoch(1)])
    np.testing.assert_array_equal(np.sort(epoch0), np.arange(50))  # each example once per epoch
    np.testing.assert_array_equal(np.sort(epoch1), np.arange(50))
    assert not np.array_equal(epoch0, epoch1)  # reshuffled each epoch
    again = np.concatenate([b["index"] for b in Loader(source, batch_size=10, seed=7).epoch(0)])
    np.testing.assert_array_equal(epoch0, again)  # same seed, same order
    other = np.concatenate([b["index"] for b in Loader(source, batch_size=10, seed=8).epoch(0)])
    assert not np.array_equal(epoch0, other)
    unshuffled = np.concatenate([b["index"] for b in Loader(source, batch_size=10, shuffle=False).epoch(3)])
    np.testing.assert_array_equal(unshuffled, np.arange(50))


def test_non_numeric_fields_dropped_unless_asked_for():
    loader = Loader(CountingSource(4), batch_size=2, shuffle=False)
    assert set(next(loader.epoch(0))) == {"index"}
    named = Loader(CountingSource(4), batch_size=2, shuffle=False, keys=["name"])
    assert next(named.epoch(0))["name"].tolist() == ["ex0", "ex1"]
    with pytest.raises(KeyError, match="missing"):
        next(Loader(CountingSource(4), batch_size=2, keys=["missing"]).epoch(0))


@pytest.mark.parametrize(("drop_remainder", "sizes"), [(True, [4, 4]), (False, [4, 4, 3])])
def test_len_and_remainder(drop_remainder, sizes):
    source = CountingSource(11)
    loader = Loader(source, batch_size=4, drop_remainder=drop_remainder)
    batches = list(loader.epoch(0))
    assert len(loader) == len(sizes)
    assert [len(b["index"]) for b in batches] == sizes
    assert source.reads == sum(sizes)  # only the examples it yields are read


def test_process_shards_partition_the_global_batch():
    source = ArraySource({"index": np.arange(103)})
    process_count, batch_size = 4, 5
    single = Loader(source, batch_size=batch_size * process_count, seed=2, process_index=0, process_count=1)
    shards = [
        Loader(source, batch_size=batch_size, seed=2, process_index=p, process_count=process_count)
        for p in range(process_count)
    ]
    assert all(len(s) == len(single) == 103 // 20 for s in shards)
    for epoch in (0, 1):
        per_process = [list(s.epoch(epoch)) for s in shards]
        for step, global_batch in enumerate(single.epoch(epoch)):
            joined = np.concatenate([per_process[p][step]["index"] for p in range(process_count)])
            np.testing.assert_array_equal(joined, global_batch["index"])
        seen = np.concatenate([b["index"] for batches in per_process for b in batches])
        assert len(np.unique(seen)) == len(seen)  # no example on two processes in one epoch


def test_stream_resumes_mid_epoch():
    loader = Loader(ArraySource({"index": np.arange(30)}), batch_size=4, seed=1)  # 7 batches per epoch
    full = [b["index"] for _, b in zip(range(20), loader.stream(), strict=False)]
    resumed = [b["index"] for _, b in zip(range(11), loader.stream(start_step=9), strict=False)]
    np.testing.assert_array_equal(np.stack(full[9:]), np.stack(resumed))
    np.testing.assert_array_equal(full[8], loader.batch(1, 1)["index"])  # step 8 = epoch 1, batch 1


def test_gather_path_matches_item_path():
    arrays = {"x": np.arange(40.0).reshape(20, 2), "y": np.arange(20) % 3}

    class ItemOnly:
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return {k: v[i] for k, v in arrays.items()}

    fast = list(Loader(ArraySource(arrays), batch_size=6, seed=4).epoch(2))
    slow = list(Loader(ItemOnly(), batch_size=6, seed=4).epoch(2))
    for a, b in zip(fast, slow, strict=True):
        for k in arrays:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"batch_size": 2.0}, "batch_size must be a positive integer"),
        ({"batch_size": 2, "process_index": 3, "process_count": 3}, "process_index < process_count"),
        (
            {"batch_size": 2, "process_index": 0, "process_count": 2, "drop_remainder": False},
            "drop_remainder",
        ),
        ({"batch_size": 20}, "no full global batch"),
    ],
)
def test_loader_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Loader(CountingSource(10), **kwargs)


def test_array_source_rejects_ragged():
    with pytest.raises(ValueError, match="equal-length"):
        ArraySource({"x": np.zeros(3), "y": np.zeros(4)})


def test_normalize_images_and_one_hot():
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 2), dtype=np.uint8)
    mean, std = np.array([0.5, 0.25]), np.array([0.2, 0.4])
    expected = (images.astype(np.float64) / 255.0 - mean) / std
    got = jax.jit(normalize_images)(images, mean, std)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(normalize_images(images), images / 255.0, rtol=1e-6)
    labels = np.array([[0, 2], [1, 1]])
    encoded = jax.jit(one_hot, static_argnums=1)(labels, 3)
    assert encoded.shape == (2, 2, 3) and encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded, np.eye(3, dtype=np.float32)[labels])


def test_normalize_and_one_hot_bad_inputs():
    with pytest.raises(TypeError, match="images must hold integer pixels"):
        normalize_images(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="labels must be integers"):
        one_hot(np.array([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        one_hot(np.array([0, 1]), 0)
