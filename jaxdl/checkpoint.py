"""Checkpoints of a training state with orbax: keep-last-k, async saving, exact resume.

`Checkpointer` is a thin layer over ``orbax.checkpoint.CheckpointManager`` for one pytree per step,
typically a `jaxdl.parallel.TrainState` (step, params, optimizer state, PRNG key). Params may be an
NNX ``nnx.State`` or Linen variables; the optimizer state any optax state (jaxdl's or optax's); typed
PRNG keys (``jax.random.key``) are saved as their key data and come back typed.

Restoring needs a *target*: a pytree of the same structure, concrete or abstract (e.g. from
``jax.eval_shape``), which fixes the Python types (NamedTuples, ``nnx.State``), shapes and the device
layout of the result. Without it orbax would return plain dicts and lists. Pass ``sharding=`` to
restore every leaf onto another layout (a different mesh, one device) than the one it was saved from.
The structure, shapes and dtypes are checked against the saved metadata first, so a wrong target fails
with a message naming the leaves that differ. A dtype change (a float32 checkpoint restored into a
bfloat16 target) is refused unless asked for with ``cast=True``: a silent cast would lose precision, or
hide a target built from the wrong config.

orbax is imported when the first `Checkpointer` is made, not with this module, so that packages
importing `jaxdl.checkpoint` (an SDM head's save/restore) do not pay for it until they save.
"""

from __future__ import annotations

import importlib
import numbers
import os
from typing import Any

import jax
import numpy as np

from jaxdl._typing import PyTree

__all__ = ["Checkpointer"]


def _ocp() -> Any:
    """``orbax.checkpoint``, imported on first use (0.5 s that ``import jaxdl.checkpoint`` need not pay)."""
    return importlib.import_module("orbax.checkpoint")


def _as_step(step: Any) -> int:
    """``step`` as a Python int: ints, NumPy integers and integer 0-d arrays (``state.step``) pass."""
    if isinstance(step, bool) or not (
        isinstance(step, numbers.Integral)
        or (hasattr(step, "dtype") and np.ndim(step) == 0 and jax.dtypes.issubdtype(step.dtype, np.integer))
    ):
        raise TypeError(f"step must be an integer (e.g. int(state.step)), got {step!r}")
    return int(step)


def _path_name(path: tuple[Any, ...]) -> str:
    """``params/hidden/w`` for a key path, whatever containers (dict, NamedTuple, list) it runs through."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _stored_shape_dtype(leaf: Any) -> tuple[tuple[int, ...], Any]:
    """The shape and dtype a target leaf has on disk (typed PRNG keys are stored as their key data)."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.eval_shape(jax.random.key_data, leaf)
    return tuple(leaf.shape), leaf.dtype


def _abstract(leaf: Any, sharding: jax.sharding.Sharding | None) -> jax.ShapeDtypeStruct:
    if sharding is not None:
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is not None:
        return leaf
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    # NumPy leaves and abstract leaves without a layout: one device, the default one.
    return jax.ShapeDtypeStruct(
        leaf.shape, leaf.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])
    )


class Checkpointer:
    """Save and restore a training-state pytree every few steps, keeping the last ``max_to_keep``.

    Args:
      directory: folder for the checkpoints (created if missing; one subfolder per step).
      max_to_keep: how many most recent checkpoints to keep (None keeps all).
      async_save: write in a background thread: `save` returns once the arrays are copied off the
        devices, training continues, and `wait` (or `close`, or the next save) waits for the write.
      save_interval_steps: `save` skips steps that are not a multiple of this unless ``force``.

    Use as a context manager, or call `close` at the end, so async writes finish.

    Raises:
      ValueError: ``max_to_keep`` or ``save_interval_steps`` is not a positive integer.

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> state = {"w": jnp.ones(3), "step": jnp.array(0)}
      >>> with tempfile.TemporaryDirectory() as tmp, Checkpointer(tmp, max_to_keep=2) as ckpt:
      ...     for step in range(3):
      ...         _ = ckpt.save(step, state)
      ...     restored = ckpt.restore(state)
      ...     ckpt.all_steps()
      [1, 2]
      >>> restored["w"]
      Array([1., 1., 1.], dtype=float32)
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = 3,
        async_save: bool = False,
        save_interval_steps: int = 1,
    ):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be a positive integer or None, got {max_to_keep}")
        if save_interval_steps < 1:
            raise ValueError(f"save_interval_steps must be a positive integer, got {save_interval_steps}")
        self.directory = os.path.abspath(os.fspath(directory))
        ocp = _ocp()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=save_interval_steps,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def save(self, step: int, state: PyTree, *, force: bool = False) -> bool:
        """Save ``state`` (any pytree of arrays) as checkpoint ``step``; returns whether it saved.

        Returns False only when ``save_interval_steps`` skips ``step`` (and ``force`` is not set).

        Raises:
          TypeError: ``step`` is not an integer (``1.7``, ``True``); an integer 0-d array such as
            ``state.step`` is accepted.
          ValueError: ``step`` is already saved, or older than the latest saved step (checkpoints are
            saved in increasing step order; `restore` an older one and save under a new step instead).
        """
        step = _as_step(step)
        steps = self.all_steps()
        if step in steps:
            raise ValueError(f"step {step} is already saved in {self.directory}; saved steps: {steps}")
        if steps and step < steps[-1]:
            raise ValueError(
                f"step {step} is older than the latest saved step {steps[-1]} in {self.directory}; "
                "checkpoints are saved in increasing step order"
            )
        return bool(self._manager.save(step, args=_ocp().args.StandardSave(state), force=force))

    def restore(
        self,
        target: PyTree,
        *,
        step: int | None = None,
        sharding: jax.sharding.Sharding | None = None,
        cast: bool = False,
    ) -> PyTree:
        """Restore checkpoint ``step`` (default: the latest) into the structure and types of ``target``.

        Args:
          target: a pytree like the saved one: concrete arrays or ``jax.ShapeDtypeStruct`` leaves (e.g.
            ``jax.eval_shape(make_state)``). Each leaf is restored with its shape, dtype and sharding.
          step: which checkpoint.
          sharding: if given, place every leaf with this sharding instead (e.g.
            ``NamedSharding(mesh, P())`` to replicate on a new mesh).
          cast: allow leaves whose dtype differs from the saved one (e.g. float32 weights restored as
            bfloat16 for inference); each is converted on restore. Without it a dtype change is an error.

        Raises:
          FileNotFoundError: there is no checkpoint, or none at ``step``.
          ValueError: ``target`` does not match the saved tree (missing or extra leaves, shapes, or
            dtypes without ``cast``).
        """
        self._manager.wait_until_finished()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
            step = steps[-1]
        step = _as_step(step)
        if step not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; saved steps: {steps}"
            )
        self._check_compatible(target, step, cast)
        abstract = jax.tree.map(lambda leaf: _abstract(leaf, sharding), target)
        return self._manager.restore(step, args=_ocp().args.StandardRestore(abstract))

    def _check_compatible(self, target: PyTree, step: int, cast: bool) -> None:
        flat_saved = jax.tree_util.tree_flatten_with_path(self._manager.item_metadata(step).tree)[0]
        saved = {_path_name(path): (tuple(m.shape), m.dtype) for path, m in flat_saved}
        flat_wanted = jax.tree_util.tree_flatten_with_path(target)[0]
        wanted = {_path_name(path): _stored_shape_dtype(leaf) for path, leaf in flat_wanted}
        common = sorted(wanted.keys() & saved.keys())
        problems = [f"missing from the checkpoint: {name}" for name in wanted.keys() - saved.keys()]
        problems += [f"not in the target: {name}" for name in saved.keys() - wanted.keys()]
        problems += [
            f"{name}: checkpoint has shape {saved[name][0]}, target {wanted[name][0]}"
            for name in common
            if saved[name][0] != wanted[name][0]
        ]
        if not cast:
            problems += [
                f"{name}: checkpoint has dtype {np.dtype(saved[name][1])}, target {np.dtype(wanted[name][1])}"
                " (pass cast=True to convert)"
                for name in common
                if np.dtype(saved[name][1]) != np.dtype(wanted[name][1])
            ]
        if problems:
            listed = "\n  ".join(sorted(problems)[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise ValueError(
                f"checkpoint {step} in {self.directory} does not match the target:\n  {listed}{more}"
            )

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All saved steps, oldest first."""
        return sorted(self._manager.all_steps())

    def wait(self) -> None:
        """Block until every pending async save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager's threads."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
