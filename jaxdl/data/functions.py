"""Function-fitting targets of the KAN paper (Liu et al. 2024, "KAN", Sec. 3.1, Fig. 3.1) and a sampler.

The inputs are uniform on a box, as in pykan's `create_dataset` (1000 train and 1000 test points by default).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["FUNCTIONS", "exp_sin", "exp_sin_squares", "make_dataset", "product", "sin_exp_x2"]


def exp_sin(x: Array) -> Array:
    """f(x, y) = exp(sin(pi x) + y^2), the KAN paper's running example. x: (..., 2) -> (..., 1).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.data.functions import exp_sin
      >>> bool(jnp.allclose(exp_sin(jnp.array([[0.5, 0.0]])), jnp.e))  # exp(sin(pi / 2)) = e
      True
    """
    return jnp.exp(jnp.sin(jnp.pi * x[..., :1]) + x[..., 1:2] ** 2)


def product(x: Array) -> Array:
    """f(x, y) = x y. x: (..., 2) -> (..., 1).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.data.functions import product
      >>> print(product(jnp.array([[2.0, 3.0]])))
      [[6.]]
    """
    return x[..., :1] * x[..., 1:2]


def exp_sin_squares(x: Array) -> Array:
    """f(x1..x4) = exp((sin(pi (x1^2 + x2^2)) + sin(pi (x3^2 + x4^2))) / 2). x: (..., 4) -> (..., 1).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.data.functions import exp_sin_squares
      >>> print(exp_sin_squares(jnp.zeros((1, 4))))
      [[1.]]
    """
    first = jnp.sin(jnp.pi * (x[..., 0] ** 2 + x[..., 1] ** 2))
    second = jnp.sin(jnp.pi * (x[..., 2] ** 2 + x[..., 3] ** 2))
    return jnp.exp(0.5 * (first + second))[..., None]


def sin_exp_x2(x: Array) -> Array:
    """f(x) = sin(exp(x) + x^2), a one-dimensional smooth target. x: (..., 1) -> (..., 1).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.data.functions import sin_exp_x2
      >>> print(sin_exp_x2(jnp.zeros((1, 1))).round(4))  # sin(1)
      [[0.8415]]
    """
    return jnp.sin(jnp.exp(x) + x**2)


FUNCTIONS: dict[str, tuple[int, Callable[[Array], Array]]] = {
    "exp_sin": (2, exp_sin),
    "product": (2, product),
    "exp_sin_squares": (4, exp_sin_squares),
    "sin_exp_x2": (1, sin_exp_x2),
}


def make_dataset(
    name: str,
    key: Array,
    *,
    num_train: int = 1000,
    num_test: int = 1000,
    input_range: tuple[float, float] = (-1.0, 1.0),
) -> dict[str, Array]:
    """Sample a function-fitting dataset with pykan's field names.

    Args:
      name: a key of `FUNCTIONS` ("exp_sin" is f(x, y) = exp(sin(pi x) + y^2)).
      key: a `jax.random` key.
      num_train, num_test: number of points.
      input_range: every input is uniform on this interval.

    Returns:
      dict with "train_input" (num_train, n), "train_label" (num_train, 1), "test_input", "test_label".

    >>> import jax
    >>> data = make_dataset("exp_sin", jax.random.key(0), num_train=8, num_test=4)
    >>> data["train_input"].shape, data["test_label"].shape
    ((8, 2), (4, 1))
    """
    if name not in FUNCTIONS:
        raise ValueError(f"name must be one of {sorted(FUNCTIONS)}, got {name!r}")
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be positive, got {num_train}, {num_test}")
    num_inputs, fn = FUNCTIONS[name]
    train_key, test_key = jax.random.split(key)
    low, high = input_range
    train = jax.random.uniform(train_key, (num_train, num_inputs), minval=low, maxval=high)
    test = jax.random.uniform(test_key, (num_test, num_inputs), minval=low, maxval=high)
    return {"train_input": train, "train_label": fn(train), "test_input": test, "test_label": fn(test)}
