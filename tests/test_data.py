"""Tests for jaxdl.data's tfds access (mock data and a real on-disk dataset), loader and preprocessing."""

import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from jaxdl.data import (
    ArraySource,
    Loader,
    SyntheticImageSource,
    image_classification,
    normalize_images,
    one_hot,
    prepare_image_folder,
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


def check_shards_partition_the_global_batch(source, process_count, batch_size, seed, epochs=(0, 1)):
    """Process p's batch at each step is block p of the single-process global batch, for every field."""
    single = Loader(
        source, batch_size=batch_size * process_count, seed=seed, process_index=0, process_count=1
    )
    shards = [
        Loader(source, batch_size=batch_size, seed=seed, process_index=p, process_count=process_count)
        for p in range(process_count)
    ]
    assert all(len(s) == len(single) == len(source) // (batch_size * process_count) for s in shards)
    for epoch in epochs:
        per_process = [list(s.epoch(epoch)) for s in shards]
        for step, global_batch in enumerate(single.epoch(epoch)):
            for key, value in global_batch.items():
                joined = np.concatenate([per_process[p][step][key] for p in range(process_count)])
                np.testing.assert_array_equal(joined, value)
    # The single loader's batches are disjoint blocks of one permutation (test_epochs_are_permutations...),
    # so no example is read by two processes in one epoch.


def test_process_shards_partition_the_global_batch():
    check_shards_partition_the_global_batch(ArraySource({"index": np.arange(103)}), 4, 5, seed=2)


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


# --- A real data set on disk: scikit-learn's 8x8 digits written as PNG files, read back through tfds ---

DIGITS_SPLITS = {"train": (0, 240), "test": (240, 320)}  # rows of sklearn's digits


@pytest.fixture(scope="session")
def digits_on_disk(tmp_path_factory):
    """The digits as root/<split>/<label>/<row>.png, prepared once with `prepare_image_folder`.

    Returns the tfds data folder and, per split, the uint8 images and labels in the order tfds stores
    them (the folder's order: class folder, then file name), computed here from the arrays, not read back.
    """
    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 grey levels -> 0..255
    expected = {}
    for split, (start, stop) in DIGITS_SPLITS.items():
        rows = np.arange(start, stop)
        for row in rows:
            folder = root / "png" / split / str(digits.target[row])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[row]).save(folder / f"{row:04d}.png")
        in_folder_order = rows[np.lexsort((rows, digits.target[rows].astype(str)))]
        expected[split] = (pixels[in_folder_order][..., None], digits.target[in_folder_order])
    info = prepare_image_folder(root / "png", "digits_png", data_dir=root / "tfds")
    assert info.features["label"].names == [str(d) for d in range(10)]
    return root / "tfds", expected


@pytest.mark.parametrize("split", sorted(DIGITS_SPLITS))
def test_image_folder_round_trip_through_tfds(digits_on_disk, split):
    data_dir, expected = digits_on_disk
    source, info = image_classification("digits_png", split, data_dir=data_dir, fallback=None)
    images, labels = expected[split]
    assert not info.synthetic and info.name == "digits_png" and info.split == split
    assert (info.num_classes, info.image_shape, info.num_examples) == (10, (8, 8, 1), len(labels))
    got = [source[i] for i in range(len(source))]
    np.testing.assert_array_equal(np.stack([g["image"] for g in got]), images)  # PNG is lossless
    np.testing.assert_array_equal(np.array([g["label"] for g in got]), labels)


def test_loader_on_real_tfds_source_order_epochs_and_seed(digits_on_disk):
    data_dir, expected = digits_on_disk
    source, _ = image_classification("digits_png", "train", data_dir=data_dir, fallback=None)
    images, labels = expected["train"]
    loader = Loader(source, batch_size=32, seed=5)
    assert len(loader) == 240 // 32
    epochs = []
    for epoch in (0, 1):
        batches = list(loader.epoch(epoch))
        order = loader.order(epoch)[: 32 * len(loader)]
        assert [set(b) for b in batches] == [{"image", "label"}] * len(loader)
        np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]), images[order])
        np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), labels[order])
        assert len(np.unique(order)) == len(order)  # no example twice in an epoch
        epochs.append(order)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    again = Loader(source, batch_size=32, seed=5)
    np.testing.assert_array_equal(next(again.epoch(1))["label"], next(loader.epoch(1))["label"])
    other = Loader(source, batch_size=32, seed=6)
    assert not np.array_equal(other.order(0), loader.order(0))
    # The whole epoch's labels are the train split's: 24 of each digit in these 240 rows.
    np.testing.assert_array_equal(np.bincount(labels[loader.order(0)], minlength=10), np.bincount(labels))


def test_loader_on_real_tfds_source_shards_the_global_batch(digits_on_disk):
    data_dir, _ = digits_on_disk
    source, _ = image_classification("digits_png", "test", data_dir=data_dir, fallback=None)
    check_shards_partition_the_global_batch(source, 4, 6, seed=3, epochs=(2,))


def test_prepare_image_folder_is_idempotent_and_checks_its_folder(digits_on_disk, tmp_path):
    data_dir, expected = digits_on_disk
    info = prepare_image_folder(data_dir.parent / "png", "digits_png", data_dir=data_dir)  # already there
    assert info.splits["test"].num_examples == len(expected["test"][1])
    (tmp_path / "png" / "train" / "a").mkdir(parents=True)
    (tmp_path / "png" / "train" / "b").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "png" / "train" / "a" / "0.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "png" / "train" / "b" / "0.png")
    with pytest.raises(ValueError, match=r"share one shape: .*b/0.png is \(9, 8, 1\)"):
        prepare_image_folder(tmp_path / "png", "mixed", data_dir=tmp_path / "tfds")


def test_missing_tfds_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # `import tensorflow_datasets` fails
    with pytest.raises(ImportError, match=r"image_classification needs tensorflow-datasets.*jaxdl\[data\]"):
        image_classification("mnist", "train")
    with pytest.raises(ImportError, match=r"prepare_image_folder needs tensorflow-datasets.*jaxdl\[data\]"):
        prepare_image_folder(tmp_path, "x", data_dir=tmp_path)
    # The loader and the preprocessing need no tfds.
    assert len(list(Loader(ArraySource({"x": np.arange(4)}), batch_size=2).epoch(0))) == 2
