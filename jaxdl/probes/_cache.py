"""A cache of jitted probes keyed by the user's functions, held weakly.

Probes are compiled once per ``(function, options)`` and then once per input shapes by
``jax.jit`` itself. Keying ``jax.jit``'s ``static_argnames`` on the user's function would keep
every function ever passed alive (a new ``lambda`` per loop iteration would leak one compiled
program per iteration). Here the cache holds only weak references: the compiled probe looks
its function up again while tracing, and the entry disappears when the function is garbage
collected. Bound methods (a new object at every attribute access) are keyed by their function
and instance, so ``probe(model.loss, ...)`` hits the cache too.
"""

from __future__ import annotations

import inspect
import types
import weakref
from collections.abc import Callable, Hashable
from typing import Any

_ENTRIES: dict[tuple, tuple[tuple[weakref.ref, ...], Any]] = {}


def _parts(function: Any) -> tuple[Any, ...]:
    if inspect.ismethod(function):
        return (function.__func__, function.__self__)
    return (function,)


def cached(
    functions: tuple[Any, ...],
    options: Hashable,
    build: Callable[[Callable[[], tuple[Any, ...]]], Any],
) -> Any:
    """``build(resolve)``, cached per identity of ``functions`` and value of ``options``.

    ``resolve()`` returns the live ``functions`` again; ``build`` must call it only while
    tracing (never keep its result), so the cached value does not keep them alive. Functions
    that cannot be weakly referenced are not cached (each call builds afresh).

    >>> calls = []
    >>> build = lambda resolve: calls.append(1) or (lambda x: resolve()[0](x))
    >>> f = lambda x: 2 * x
    >>> cached((f,), "opts", build)(3), cached((f,), "opts", build)(4), len(calls)
    (6, 8, 1)
    """
    methods = tuple(inspect.ismethod(f) for f in functions)
    flat = tuple(p for f in functions for p in _parts(f))
    key = (tuple(map(id, flat)), options)
    hit = _ENTRIES.get(key)
    if hit is not None and all(ref() is p for ref, p in zip(hit[0], flat, strict=True)):
        return hit[1]
    try:
        refs = tuple(weakref.ref(p) for p in flat)
    except TypeError:  # e.g. a callable object with __slots__: build without caching
        return build(lambda: functions)

    def resolve() -> tuple[Any, ...]:
        live: list[Any] = [ref() for ref in refs]
        if any(p is None for p in live):
            raise RuntimeError("the function of this cached probe was garbage collected")
        out, i = [], 0
        for is_method in methods:
            out.append(types.MethodType(live[i], live[i + 1]) if is_method else live[i])
            i += 2 if is_method else 1
        return tuple(out)

    value = build(resolve)
    _ENTRIES[key] = (refs, value)
    for p in {id(p): p for p in flat}.values():
        weakref.finalize(p, _ENTRIES.pop, key, None)
    return value
