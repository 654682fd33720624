"""Datasets for the examples and tests: offline generators, tfds access, a batch loader, preprocessing.

- `jaxdl.data.tfds`: TensorFlow Datasets without TensorFlow: `image_classification` (with an announced
  synthetic stand-in, `SyntheticImageSource`, when the data is not on disk) and `prepare_image_folder`
  (a folder of image files as a tfds dataset, offline). Needs the ``data`` extra
  (``pip install 'jaxdl[data]'``), imported only when these functions run.
- `jaxdl.data.loader`: `Loader`, deterministic epoch-aware batches of any random-access source, sharded
  across processes; `ArraySource` for in-memory arrays.
- `jaxdl.data.preprocessing`: `normalize_images`, `one_hot`.
- `jaxdl.data.modular`: modular-arithmetic tables for the grokking experiments.
- `jaxdl.data.listops`, `jaxdl.data.gratings`: ListOps (LRA grammar) and oriented gratings for the SSM examples.
- `jaxdl.data.functions`: the KAN paper's function-fitting targets (`functions.make_dataset`).
"""

from jaxdl.data import functions, gratings, listops, modular
from jaxdl.data.gratings import oriented_gratings
from jaxdl.data.listops import LISTOPS_VOCAB, evaluate_listops, generate_listops
from jaxdl.data.loader import ArraySource, Loader
from jaxdl.data.modular import ModularSplit, modular_arithmetic, one_hot_pairs
from jaxdl.data.preprocessing import normalize_images, one_hot
from jaxdl.data.synthetic import SyntheticImageSource
from jaxdl.data.tfds import DatasetInfo, image_classification, prepare_image_folder

__all__ = [
    "LISTOPS_VOCAB",
    "ArraySource",
    "DatasetInfo",
    "Loader",
    "ModularSplit",
    "SyntheticImageSource",
    "evaluate_listops",
    "functions",
    "generate_listops",
    "gratings",
    "image_classification",
    "listops",
    "modular",
    "modular_arithmetic",
    "normalize_images",
    "one_hot",
    "one_hot_pairs",
    "oriented_gratings",
    "prepare_image_folder",
]
