"""Datasets for the examples and tests: offline generators and tfds loaders.

- `jaxdl.data.tfds`: TensorFlow Datasets without TensorFlow (`image_classification`, with an announced
  synthetic stand-in when the data is not on disk) and `Loader`, deterministic epoch-aware batches of
  any random-access source, sharded across processes.
- `jaxdl.data.modular`: modular-arithmetic tables for the grokking experiments.
- `jaxdl.data.listops`, `jaxdl.data.gratings`: ListOps (LRA grammar) and oriented gratings for the SSM examples.
- `jaxdl.data.functions`: the KAN paper's function-fitting targets (`functions.make_dataset`).
"""

from jaxdl.data import functions, gratings, listops, modular
from jaxdl.data.gratings import oriented_gratings
from jaxdl.data.listops import LISTOPS_VOCAB, evaluate_listops, generate_listops
from jaxdl.data.modular import ModularSplit, modular_arithmetic, one_hot_pairs
from jaxdl.data.tfds import (
    ArraySource,
    DatasetInfo,
    Loader,
    SyntheticImageSource,
    image_classification,
    normalize_images,
    one_hot,
)
