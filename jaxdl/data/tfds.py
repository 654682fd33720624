"""Image-classification data from TensorFlow Datasets without TensorFlow.

`image_classification` opens a prepared tfds dataset through ``tfds.data_source`` (random access over
ArrayRecord files; no TensorFlow import). When the data is not on disk it can hand back a synthetic
stand-in of the same shapes (`SyntheticImageSource`), after saying so loudly, so that every example
runs offline. `prepare_image_folder` turns a folder of image files laid out as for
``tfds.folder_dataset.ImageFolder`` (``root/<split>/<class>/<image>``) into such a prepared dataset
with tfds's own builder machinery, offline and without TensorFlow.

tensorflow-datasets is an optional dependency (``pip install 'jaxdl[data]'``), imported only when one
of these functions runs. The batch loader (`Loader`, `ArraySource`, in `jaxdl.data.loader`) and the
preprocessing (`normalize_images`, `one_hot`, in `jaxdl.data.preprocessing`) need no tfds; they stay
importable from here as before.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from jaxdl.data.loader import ArraySource, Loader
from jaxdl.data.preprocessing import normalize_images, one_hot
from jaxdl.data.synthetic import SyntheticImageSource

__all__ = [
    "ArraySource",
    "DatasetInfo",
    "Loader",
    "SyntheticImageSource",
    "image_classification",
    "normalize_images",
    "one_hot",
    "prepare_image_folder",
]

# Split sizes of the datasets we know, for the synthetic stand-in when no DatasetInfo is on disk.
_KNOWN_SPLITS = {
    "mnist": {"train": 60_000, "test": 10_000},
    "fashion_mnist": {"train": 60_000, "test": 10_000},
    "kmnist": {"train": 60_000, "test": 10_000},
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
}
_DEFAULT_SPLITS = {"train": 10_000, "test": 2_000}
# What tfds raises from `data_source(..., download=False)` when the dataset is not prepared in a
# random-access format: KeyError (no splits), NotImplementedError (only TFRecord files), the others
# for partial or unreadable folders.
_NOT_ON_DISK = (KeyError, NotImplementedError, FileNotFoundError, AssertionError)
# Image files that tfds can store as they are and decode without TensorFlow (through PIL).
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PIL_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}


def _import_tfds(caller: str) -> Any:
    """``tensorflow_datasets``, or an ImportError that names the extra to install."""
    try:
        import tensorflow_datasets as tfds  # imported here: 0.5 s that `import jaxdl` need not pay
    except ImportError as err:
        raise ImportError(
            f"jaxdl.data.{caller} needs tensorflow-datasets, which is not installed: "
            "pip install 'jaxdl[data]'"
        ) from err
    return tfds


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about an image-classification source.

    Attributes:
      name: tfds name, e.g. ``"mnist"``.
      split: the split that was opened, e.g. ``"train"``.
      num_classes: number of label values.
      image_shape: ``(height, width, channels)`` of one image.
      num_examples: ``len(source)``.
      synthetic: True when the source is the synthetic stand-in rather than the real data.

    Example:
      >>> from jaxdl.data.tfds import DatasetInfo
      >>> info = DatasetInfo("mnist", "test", 10, (28, 28, 1), num_examples=10_000, synthetic=False)
      >>> height, width, channels = info.image_shape
      >>> height * width * channels, info.num_classes  # a flattened image, and the logits a model needs
      (784, 10)
    """

    name: str
    split: str
    num_classes: int
    image_shape: tuple[int, int, int]
    num_examples: int
    synthetic: bool


def image_classification(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    fallback: str | None = "synthetic",
    seed: int = 0,
):
    """Open a tfds image-classification split for random access, or a synthetic stand-in.

    Reads the prepared dataset with ``tfds.data_source(name, split=split, download=False)``: nothing is
    downloaded and TensorFlow is not imported. Prepare the data once beforehand, e.g.
    ``tfds build mnist --file_format=array_record`` (or ``tfds.data_source(name, download=True)``).

    Args:
      name: a tfds dataset with ``image`` and ``label`` features: ``"mnist"``, ``"fashion_mnist"``,
        ``"cifar10"``, ...
      split: a tfds split, e.g. ``"train"``, ``"test"`` (the synthetic stand-in knows only those two).
      data_dir: tfds data folder (default: tfds's own, ``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``).
      fallback: ``"synthetic"`` to return a same-shaped synthetic source (announced by a printed notice) when
        the data is not on disk; ``None`` to raise ``FileNotFoundError`` instead.
      seed: seed of the synthetic stand-in (ignored for real data).

    Returns:
      ``(source, info)``: ``source[i]`` is ``{"image": uint8 (H, W, C), "label": int64 ()}`` (real
      tfds sources may carry more fields, which `Loader` drops if they are not numeric) and
      ``len(source)`` its size; ``info`` is a `DatasetInfo`.

    Raises:
      ImportError: tensorflow-datasets is not installed (``pip install 'jaxdl[data]'``).
      ValueError: unknown dataset (tfds's ``DatasetNotFoundError``, a ValueError), or a dataset without image/label features, or a bad ``fallback``.
      FileNotFoundError: the data is not prepared and ``fallback`` is None.

    Example:
      >>> source, info = image_classification("mnist", "test", data_dir="/nonexistent")  # doctest: +ELLIPSIS
      jaxdl.data: mnist/test is not prepared under /nonexistent...
      >>> info.num_classes, info.image_shape, info.synthetic, len(source)
      (10, (28, 28, 1), True, 10000)
    """
    if fallback not in ("synthetic", None):
        raise ValueError(f"fallback must be 'synthetic' or None, got {fallback!r}")
    tfds = _import_tfds("image_classification")
    data_dir = None if data_dir is None else os.fspath(data_dir)

    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(f"{name!r} is not an image-classification dataset: features are {list(features)}")
    image_shape = tuple(features["image"].shape)
    num_classes = int(features["label"].num_classes)
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except _NOT_ON_DISK as err:
        where = data_dir or "the default tfds data folder"
        reason = f"{name}/{split} is not prepared under {where}"
        if builder.is_prepared():  # there is data, but not in a random-access format
            reason += f" as random-access files ({type(err).__name__}: {str(err).splitlines()[0]})"
        if fallback is None:
            raise FileNotFoundError(
                f"{reason}. Prepare it once with `tfds build {name} --file_format=array_record` "
                "(needs network access), or pass fallback='synthetic'."
            ) from err
        splits = _KNOWN_SPLITS.get(name, _DEFAULT_SPLITS)
        if split not in splits:
            raise ValueError(
                f"the synthetic stand-in for {name!r} has splits {sorted(splits)}, got split={split!r}"
            ) from err
        if None in image_shape:
            raise ValueError(
                f"{name!r} has variable image shape {image_shape}; no synthetic stand-in"
            ) from err
        print(
            f"jaxdl.data: {reason}.\n"
            f"jaxdl.data: USING A SYNTHETIC STAND-IN for {name}/{split} ({splits[split]} examples of "
            f"shape {image_shape}, {num_classes} classes). Numbers from it say nothing about {name}."
        )
        source = SyntheticImageSource(splits[split], image_shape, num_classes, seed=seed, split=split)
        synthetic = True
    else:
        synthetic = False
    info = DatasetInfo(name, split, num_classes, image_shape, len(source), synthetic)
    return source, info


def _scan_image_folder(
    root: Path,
) -> tuple[dict[str, list[tuple[Path, str]]], list[str], tuple[int, int, int]]:
    """Splits -> [(file, class name)], the sorted class names, and the common image shape."""
    from PIL import Image  # a dependency of tfds's NumPy image decoding

    if not root.is_dir():
        raise FileNotFoundError(f"root must be a folder laid out as root/<split>/<class>/<image>, got {root}")
    splits: dict[str, list[tuple[Path, str]]] = {}
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = [
            (f, class_dir.name)
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir())
            for f in sorted(class_dir.iterdir())
            if f.suffix.lower() in _IMAGE_SUFFIXES
        ]
        if files:
            splits[split_dir.name] = files
    if not splits:
        raise ValueError(
            f"no images ({', '.join(_IMAGE_SUFFIXES)}) found under {root}/<split>/<class>/: "
            "root must be laid out as for tfds.folder_dataset.ImageFolder"
        )
    classes = sorted({label for files in splits.values() for _, label in files})
    shape = None
    for files in splits.values():
        for path, _ in files:
            with Image.open(path) as image:
                if image.mode not in _PIL_CHANNELS:
                    raise ValueError(
                        f"{path}: image mode {image.mode!r} is not one of {sorted(_PIL_CHANNELS)}"
                    )
                this = (image.height, image.width, _PIL_CHANNELS[image.mode])
            if shape is None:
                shape = this
            elif this != shape:
                raise ValueError(
                    f"images must share one shape: {path} is {this}, the first image was {shape}"
                )
    assert shape is not None
    return splits, classes, shape


def prepare_image_folder(
    root: str | os.PathLike[str],
    name: str,
    *,
    data_dir: str | os.PathLike[str],
    version: str = "1.0.0",
) -> Any:
    """Prepare a folder of image files as a tfds dataset that `image_classification` can open.

    ``root`` is laid out as for ``tfds.folder_dataset.ImageFolder``: ``root/<split>/<class>/<image>``
    (PNG or JPEG, all of one shape). ``ImageFolder`` itself decodes through ``tf.data``, i.e. needs
    TensorFlow; this writes the same data once with tfds's own builder machinery as ArrayRecord files
    under ``data_dir/name/version`` (the image files' bytes are stored as they are, nothing is
    re-encoded or downloaded), after which ``tfds.data_source`` and `image_classification` read it
    with random access and NumPy decoding (PIL), without TensorFlow. Labels are the class folder
    names in sorted order (as ``ImageFolder`` numbers them); the examples are stored in the folder's
    order (class, then file name), so ``source[i]`` is the ``i``-th file. A dataset already prepared under
    ``data_dir`` at this version is left as it is; delete its folder to rebuild it.

    Args:
      root: the image folder.
      name: the tfds dataset name to store it under (lower-case letters, digits and ``_``).
      data_dir: the tfds data folder to write to (pass the same to `image_classification`).
      version: the dataset version, ``"major.minor.patch"``.

    Returns:
      The tfds ``DatasetInfo`` of the prepared dataset (``.splits[split].num_examples``,
      ``.features["label"].names``).

    Raises:
      ImportError: tensorflow-datasets is not installed (``pip install 'jaxdl[data]'``).
      FileNotFoundError: ``root`` is not a folder.
      ValueError: a bad ``name``, no images under ``root``, images of different shapes, or an image
        mode other than L, RGB or RGBA.

    Example:
      >>> import tempfile
      >>> import numpy as np
      >>> from PIL import Image
      >>> folder = tempfile.TemporaryDirectory()
      >>> tmp = Path(folder.name)
      >>> for split, count in {"train": 3, "test": 2}.items():
      ...     for label in ("cat", "dog"):
      ...         (tmp / "images" / split / label).mkdir(parents=True)
      ...         for i in range(count):
      ...             Image.fromarray(np.full((4, 4), 60 * i, np.uint8)).save(tmp / "images" / split / label / f"{i}.png")
      >>> info = prepare_image_folder(tmp / "images", "pets", data_dir=tmp / "tfds")
      >>> info.features["label"].names, info.splits["train"].num_examples
      (['cat', 'dog'], 6)
      >>> source, pets = image_classification("pets", "test", data_dir=tmp / "tfds", fallback=None)
      >>> pets.image_shape, pets.num_classes, len(source), int(source[3]["label"])
      ((4, 4, 1), 2, 4, 1)
      >>> folder.cleanup()
    """
    tfds = _import_tfds("prepare_image_folder")
    if not isinstance(name, str) or not name or not all(c.islower() or c.isdigit() or c == "_" for c in name):
        raise ValueError(
            f"name must be a non-empty tfds name of lower-case letters, digits and _, got {name!r}"
        )
    splits, classes, shape = _scan_image_folder(Path(root))
    features = tfds.features.FeaturesDict(
        {"image": tfds.features.Image(shape=shape), "label": tfds.features.ClassLabel(names=classes)}
    )

    generator_builder: Any = tfds.core.GeneratorBasedBuilder

    class _ImageFolderBuilder(generator_builder, skip_registration=True):  # type: ignore[call-arg]
        """A builder for this one folder; found again later from its files, by name and data_dir."""

        VERSION = tfds.core.Version(version)
        # tfds looks for a checksums file next to a builder's code through `code_path`, which for a
        # class defined inside a package touches `importlib_resources` (not installed on Python >= 3.9).
        # This builder downloads nothing, so it has no code path.
        code_path = None

        def _info(self) -> Any:
            # disable_shuffling: store the examples in the folder's order (class, then file name);
            # `Loader` shuffles per epoch.
            return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

        # tfds announces "Downloading and preparing dataset ..."; nothing is downloaded here.
        def _log_download_bytes(self) -> None:
            pass

        def _log_download_done(self) -> None:
            pass

        def _split_generators(self, dl_manager: Any) -> Any:
            return {split: self._generate_examples(files) for split, files in splits.items()}

        def _generate_examples(self, files: list[tuple[Path, str]]) -> Any:
            for index, (path, label) in enumerate(files):
                # A path makes tfds store the file's bytes as they are (no TensorFlow encoder).
                yield index, {"image": tfds.core.Path(path), "label": label}

    _ImageFolderBuilder.name = name
    builder = _ImageFolderBuilder(data_dir=os.fspath(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return builder.info
