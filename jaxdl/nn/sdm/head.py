"""`SDMHead`: a Flax NNX SDM output layer with its exemplar memory, calibration and checkpoints.

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760, §3.1 and App. A.4: the
exemplar adaptor standardises a frozen hidden state h with scalar (μ, σ), maps it by a Dense layer
to the exemplar vector h' (the space of the nearest-neighbour search) and by a second Dense layer,
with no nonlinearity between, to the logits z'. The head keeps the training exemplars and the
calibration statistics as non-trainable state; `fit_sdm` trains it, `calibrate` runs Alg. 1 and
`predict` returns the SDM estimator's outputs (`sdm_estimate`).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdl.checkpoint import Checkpointer
from jaxdl.nn.sdm.calibration import SDMCalibration, calibrate_thresholds
from jaxdl.nn.sdm.estimator import CalibrationPoints, ExemplarMemory, SDMOutput, SDMState, sdm_estimate
from jaxdl.nn.sdm.index import ExemplarIndex, build_index
from jaxdl.nn.sdm.similarity import ClassECDF

DEFAULT_K = 2048
"""The reference's neighbour cap (``maxQAvailableFromIndexer``), hence the largest possible q."""


class SDMMemory(nnx.Variable):
    """Non-trainable SDM state: the standardisation scalars and the exemplar/calibration `SDMState`.

    Example:
      >>> import jax
      >>> from flax import nnx
      >>> from jaxdl.nn.sdm import SDMHead, SDMMemory
      >>> head = SDMHead(8, 2, hidden=4, rngs=nnx.Rngs(0))
      >>> isinstance(head.state, SDMMemory), head.standardization[...].tolist()  # (μ, σ) before fit_sdm
      (True, [0.0, 1.0])
      >>> len(jax.tree.leaves(nnx.state(head, nnx.Param)))  # an optimizer sees only the 2 kernels, 2 biases
      4
    """


def _empty_state(hidden: int, num_classes: int, dtype: jax.typing.DTypeLike = jnp.float32) -> SDMState:
    """The state of an unfitted head: no exemplars, no calibration points, nothing admitted.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import distance_quantile
      >>> from jaxdl.nn.sdm.head import _empty_state
      >>> state = _empty_state(hidden=16, num_classes=3)
      >>> state.memory.vectors.shape, state.distance_ecdf.counts.tolist()
      ((0, 16), [0, 0, 0])
      >>> float(state.calibration.q_min), bool(jnp.isnan(state.calibration.alpha))  # nothing is admitted
      (inf, True)
      >>> distance_quantile(jnp.array([0.0]), state.distance_ecdf).tolist()  # empty classes: d = 0
      [0.0]
    """
    no_samples = ClassECDF(jnp.full((num_classes, 1), jnp.inf, dtype), jnp.zeros(num_classes, jnp.int32))
    return SDMState(
        memory=ExemplarMemory(
            build_index(jnp.zeros((0, hidden), dtype)), jnp.zeros(0, jnp.int32), jnp.zeros(0, jnp.int32)
        ),
        distance_ecdf=no_samples,
        calibration_points=CalibrationPoints(
            jnp.zeros((0, num_classes), dtype), jnp.zeros(0, dtype), jnp.zeros(0, jnp.int32)
        ),
        calibration=SDMCalibration(
            alpha=jnp.asarray(jnp.nan, dtype),
            q_min=jnp.asarray(jnp.inf, dtype),
            thresholds=jnp.zeros(num_classes, dtype),
            q_prime_ecdf=no_samples,
        ),
    )


class SDMHead(nnx.Module):
    """An SDM output layer over frozen features ([ACT] §3.1, App. A.4).

    ``head(x)`` gives ``(logits [B, C], exemplar_vectors [B, hidden])``; after `fit_sdm` and
    `calibrate`, ``head.predict(x)`` gives the full `SDMOutput` (SDM probabilities, q, q', d,
    prediction, admission and the nearest exemplars).

    Args:
      in_features: D, the size of the frozen features h.
      num_classes: C.
      hidden: M, the size of the exemplar vector h' (1000 in the paper).
      k: neighbours searched, the cap on q (2048 in the reference code).
      rngs: the random generators for the Dense initialisers.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> head = SDMHead(8, 3, hidden=16, rngs=nnx.Rngs(0))
    >>> logits, exemplars = head(jnp.ones((2, 8)))
    >>> logits.shape, exemplars.shape
    ((2, 3), (2, 16))
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: int = 1000, *, k: int = DEFAULT_K, rngs: nnx.Rngs
    ):
        for name, value, low in (
            ("in_features", in_features, 1),
            ("num_classes", num_classes, 2),
            ("hidden", hidden, 1),
            ("k", k, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"SDMHead: {name} must be an int >= {low}, got {value!r}")
        self.in_features, self.num_classes, self.hidden, self.k = in_features, num_classes, hidden, k
        self.exemplar = nnx.Linear(in_features, hidden, rngs=rngs)
        self.classifier = nnx.Linear(hidden, num_classes, rngs=rngs)
        # Scalar mean and standard deviation over all entries of the training features ([CODE]).
        self.standardization = SDMMemory(jnp.array([0.0, 1.0]))
        self.state = SDMMemory(_empty_state(hidden, num_classes))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(logits z' [B, C], exemplar vectors h' [B, hidden])`` for features ``x [B, in_features]``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"SDMHead: x must have {self.in_features} features in its last axis, got {x.shape}"
            )
        return _adaptor(self._adaptor_params(), x)

    def _adaptor_params(self) -> tuple:
        """``((μ, σ), (W1, b1), (W2, b2))`` as plain arrays, for the functional `_adaptor`."""
        return (
            self.standardization[...],
            (self.exemplar.kernel[...], cast(nnx.Param, self.exemplar.bias)[...]),
            (self.classifier.kernel[...], cast(nnx.Param, self.classifier.bias)[...]),
        )

    @property
    def memory_size(self) -> int:
        """N, the number of training exemplars in the memory (0 before `fit_sdm`)."""
        return self.state.get_value().memory.vectors.shape[0]

    def index_exemplars(
        self,
        *,
        compute_dtype: jax.typing.DTypeLike | None = None,
        precision: str | jax.lax.Precision | None = "highest",
        mesh: jax.sharding.Mesh | None = None,
        axis_name: str | None = None,
    ) -> ExemplarIndex:
        """Re-indexes the exemplar memory once (see `build_index`) and keeps the new index.

        E.g. ``compute_dtype=jnp.bfloat16`` for bf16 products, or a ``mesh`` to split the exemplars over
        devices; every later `predict` searches that index without preparing the exemplars again.

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxdl.nn.sdm import ExemplarMemory, SDMHead, build_index
        >>> head = SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(0))
        >>> memory = ExemplarMemory(build_index(jnp.ones((3, 8))), jnp.array([0, 1, 1]), jnp.array([0, 1, 0]))
        >>> head.state.set_value(head.state.get_value()._replace(memory=memory))
        >>> head.index_exemplars(compute_dtype=jnp.bfloat16).search_vectors.dtype
        dtype(bfloat16)
        """
        state: SDMState = self.state.get_value()
        vectors = state.memory.vectors
        index = build_index(
            vectors.exemplars if isinstance(vectors, ExemplarIndex) else vectors,
            compute_dtype=compute_dtype,
            precision=precision,
            mesh=mesh,
            axis_name=axis_name,
        )
        self.state.set_value(state._replace(memory=state.memory._replace(vectors=index)))
        return index

    def calibrate(self, alpha: float = 0.95) -> SDMCalibration:
        """Runs Alg. 1 on the stored calibration points for target accuracy ``alpha`` and keeps the result.

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxdl.nn.sdm import CalibrationPoints, SDMHead
        >>> head = SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(0))
        >>> points = CalibrationPoints(jnp.array([[0.99, 0.01], [0.02, 0.98]]), jnp.array([5.0, 5.0]), jnp.array([0, 1]))
        >>> head.state.set_value(head.state.get_value()._replace(calibration_points=points))
        >>> float(head.calibrate(0.95).q_min)
        5.0
        """
        state: SDMState = self.state.get_value()
        if state.calibration_points.labels.shape[0] == 0:
            raise ValueError(
                "SDMHead.calibrate: the head has no calibration points; fit it with fit_sdm first"
            )
        calibration = calibrate_thresholds(*state.calibration_points, alpha)
        self.state.set_value(state._replace(calibration=calibration))
        return calibration

    def predict(self, x: jax.Array, **search_options) -> SDMOutput:
        """The SDM estimator for features ``x [B, in_features]`` (see `sdm_estimate`).

        One jitted function per shapes and options: repeated calls compile nothing. The exemplars are
        searched through the head's `ExemplarIndex`, prepared once (`index_exemplars` changes it).

        Args:
          x: ``[B, in_features]`` features, finite.
          **search_options: passed to `ExemplarIndex.search`: ``block_size``, ``query_block_size``,
            ``approximate``, ``recall_target``. Index options (``compute_dtype``, ``precision``,
            ``mesh``, ``axis_name``) re-index the exemplars for this call only.

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxdl.nn.sdm import CalibrationPoints, ExemplarMemory, SDMHead, build_index
        >>> head = SDMHead(4, 2, hidden=8, k=32, rngs=nnx.Rngs(0))
        >>> labels = jnp.array([0, 1, 1])  # three exemplars and calibration points, as fit_sdm stores them
        >>> head.state.set_value(
        ...     head.state.get_value()._replace(
        ...         memory=ExemplarMemory(build_index(jnp.eye(3, 8)), labels, labels),
        ...         calibration_points=CalibrationPoints(jnp.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]]), jnp.ones(3), labels),
        ...     )
        ... )
        >>> _ = head.calibrate(0.9)
        >>> out = head.predict(jnp.ones((5, 4)))
        >>> out.probs.shape, out.neighbours.shape  # k is capped by the 3 exemplars
        ((5, 2), (5, 3))
        """
        state: SDMState = self.state.get_value()
        if state.memory.vectors.shape[0] == 0:
            raise ValueError("SDMHead.predict: the head has no exemplar memory; fit it with fit_sdm first")
        alpha = state.calibration.alpha
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"SDMHead.predict: x must have shape [B, {self.in_features}], got {x.shape}")
        # Both checks in one dispatch and one transfer (each is a host round trip on an accelerator).
        uncalibrated, finite = _input_checks(alpha, x)
        if uncalibrated:
            raise ValueError("SDMHead.predict: the head is not calibrated; call head.calibrate(alpha) first")
        if not finite:
            raise ValueError(
                "SDMHead.predict: x has nan or inf entries; the SDM estimator needs finite features"
            )
        k = min(self.k, state.memory.vectors.shape[0])
        return _predict(self._adaptor_params(), state, x, k, tuple(sorted(search_options.items())))


def _input_checks(alpha: jax.Array, x: jax.Array) -> tuple[Any, Any]:
    """``(isnan(alpha), all(isfinite(x)))`` on the host (one transfer); a traced value passes."""
    concrete_alpha, concrete_x = not isinstance(alpha, jax.core.Tracer), not isinstance(x, jax.core.Tracer)
    if concrete_alpha and concrete_x:
        return jax.device_get(_input_flags(alpha, x))
    return concrete_alpha and bool(jnp.isnan(alpha)), not concrete_x or bool(jnp.isfinite(x).all())


@jax.jit
def _input_flags(alpha: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.isnan(alpha), jnp.isfinite(x).all()


def _adaptor(params: tuple, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The exemplar adaptor ([ACT] App. A.4): standardise, Dense → h', Dense → z' (no nonlinearity)."""
    (mean, std), (kernel, bias), (out_kernel, out_bias) = params
    exemplar_vectors = jnp.dot((x - mean) / std, kernel) + bias
    return jnp.dot(exemplar_vectors, out_kernel) + out_bias, exemplar_vectors


@functools.partial(jax.jit, static_argnums=(3, 4))
def _predict(params: tuple, state: SDMState, x: jax.Array, k: int, search_options: tuple) -> SDMOutput:
    # Plain arrays in, no module traversal per call; predict never writes the head's state back.
    logits, exemplar_vectors = _adaptor(params, x)
    return sdm_estimate(logits, exemplar_vectors, state, k=k, **dict(search_options))


_LAYOUT_FILE = "sdm_head.json"
"""Beside the checkpoint: the shape and dtype of every saved leaf, to build the restore target."""


def _payload(head: SDMHead) -> dict:
    """The head's state as a pure dict, with the exemplar index replaced by its plain exemplars."""
    payload = nnx.to_pure_dict(nnx.state(head))
    state: SDMState = payload["state"]
    index: Any = state.memory.vectors
    vectors: Any = {"exemplars": index.exemplars, "sq_norms": index.sq_norms[: index.num_exemplars]}
    payload["state"] = state._replace(memory=state.memory._replace(vectors=vectors))
    return payload


def _leaf_name(path) -> str:
    return "/".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))) for key in path)


def save_head(directory: str | os.PathLike, head: SDMHead) -> None:
    """Writes the head's weights, standardisation, exemplar memory and calibration (`jaxdl.checkpoint`).

    Saving again into the same directory replaces the previous save.

    Args:
      directory: the checkpoint directory (created if missing).
      head: the head to save.

    Example:
      >>> import os, tempfile
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxdl.nn.sdm import CalibrationPoints, ExemplarMemory, SDMHead, build_index, restore_head, save_head
      >>> head = SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(0))
      >>> labels = jnp.array([0, 1, 1])
      >>> head.state.set_value(  # three exemplars and calibration points, as fit_sdm would store them
      ...     head.state.get_value()._replace(
      ...         memory=ExemplarMemory(build_index(jnp.ones((3, 8))), labels, jnp.array([0, 1, 0])),
      ...         calibration_points=CalibrationPoints(jnp.full((3, 2), 0.5), jnp.ones(3), labels),
      ...     )
      ... )
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     save_head(os.path.join(tmp, "head"), head)
      ...     restored = restore_head(os.path.join(tmp, "head"), SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(1)))
      >>> restored.memory_size, restored.state.get_value().memory.predictions.tolist()
      (3, [0, 1, 0])
      >>> bool((restored.exemplar.kernel[...] == head.exemplar.kernel[...]).all())
      True
    """
    if head.memory_size == 0:
        raise ValueError("save_head: the head has no exemplar memory; fit it with fit_sdm before saving")
    payload = _payload(head)
    layout = {
        _leaf_name(path): [list(leaf.shape), jnp.dtype(leaf.dtype).name]
        for path, leaf in jax.tree_util.tree_flatten_with_path(payload)[0]
    }
    with Checkpointer(directory, max_to_keep=1) as checkpointer:
        latest = checkpointer.latest_step()
        checkpointer.save(0 if latest is None else latest + 1, payload)
        Path(checkpointer.directory, _LAYOUT_FILE).write_text(json.dumps(layout))


def restore_head(directory: str | os.PathLike, head: SDMHead) -> SDMHead:
    """Loads a checkpoint written by `save_head` into ``head`` (built with the same arguments).

    The memory and calibration sizes come from the checkpoint, so ``head`` may be freshly built; the
    exemplar index comes back on one device with `build_index`'s defaults (`SDMHead.index_exemplars`
    re-indexes it, e.g. over a mesh).

    >>> import tempfile
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdl.nn.sdm import CalibrationPoints, ExemplarMemory, build_index
    >>> head = SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(0))
    >>> labels = jnp.array([0, 1, 1])
    >>> head.state.set_value(
    ...     head.state.get_value()._replace(
    ...         memory=ExemplarMemory(build_index(jnp.eye(3, 8)), labels, labels),
    ...         calibration_points=CalibrationPoints(jnp.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]]), jnp.ones(3), labels),
    ...     )
    ... )
    >>> _ = head.calibrate(0.9)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_head(tmp + "/head", head)
    ...     restored = restore_head(tmp + "/head", SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(1)))
    >>> x = jnp.linspace(-1, 1, 12).reshape(3, 4)
    >>> bool((restored.predict(x).probs == head.predict(x).probs).all())
    True
    """
    layout_file = Path(directory, _LAYOUT_FILE)
    if not layout_file.exists():
        raise FileNotFoundError(f"restore_head: {directory} holds no checkpoint written by save_head")
    layout = json.loads(layout_file.read_text())

    def abstract(path, leaf: Any) -> jax.ShapeDtypeStruct:
        name = _leaf_name(path)
        if name not in layout:
            raise ValueError(
                f"restore_head: the checkpoint in {directory} has no {name}; was head built alike?"
            )
        shape, dtype = layout[name]
        return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))

    target = jax.tree_util.tree_map_with_path(abstract, _payload(head))
    with Checkpointer(directory, max_to_keep=1) as checkpointer:
        restored = checkpointer.restore(target)
    state: SDMState = restored["state"]
    vectors: Any = state.memory.vectors
    index = ExemplarIndex(vectors["exemplars"], vectors["sq_norms"], None, vectors["exemplars"].shape[0])
    restored["state"] = state._replace(memory=state.memory._replace(vectors=index))
    graph_state = nnx.state(head)
    nnx.replace_by_pure_dict(graph_state, restored)
    nnx.update(head, graph_state)
    return head
