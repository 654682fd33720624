"""Host-side initial modes of the S4D and S5 layers (NumPy complex128, computed once and cached).

S4D (Gu, Gupta, Goel, Ré, NeurIPS 2022, Sec. 4): diagonal modes from `s4d_init`; S4-PTD / S5-PTD (Yu et al.,
ICLR 2024, Sec. 4): Lambda, V from `ptd` of HiPPO-LegS, B~ = V^{-1} B, C~ = C V; S5 (Smith et al., ICLR 2023,
Sec. 4.3): the eigendecomposition of the normal part of a HiPPO-LegS block.

Like `hippo` and `ptd`, everything here runs on the host: non-Hermitian `eig` has no GPU/TPU path in JAX. The
results are cached per configuration and returned as read-only arrays, so a caller cannot change what later
layers are initialised with.
"""

from __future__ import annotations

import functools

import numpy as np

from jaxdl.nn.ssm.hippo import S4D_INITS, hippo_legs, nplr_legs, s4d_init
from jaxdl.nn.ssm.ptd import conjugate_half, ptd

__all__ = ["S4D_LAYER_INITS", "S5_INITS", "s4d_modes", "s5_block_modes"]

S4D_LAYER_INITS = (*S4D_INITS, "ptd")
S5_INITS = ("legs", "ptd")


def _read_only(*arrays):
    out = []
    for array in arrays:
        if array is not None:
            array = np.array(array)  # a private copy, so no cached result shares memory with a caller's array
            array.setflags(write=False)
        out.append(array)
    return tuple(out)


def _ptd_modes(N: int, ptd_kwargs: dict):
    Lambda, V, V_inv, _ = ptd(hippo_legs(N)[0], **ptd_kwargs)
    return conjugate_half(Lambda, V, V_inv)


@functools.lru_cache(maxsize=32)
def s4d_modes(init: str, state_size: int, ptd_items: tuple = ()):
    """Host-side S4D modes: (Lambda (M,), B (M,), C_basis (N, M) or None), read-only complex128 arrays.

    For "ptd", Lambda, V come from `ptd(hippo_legs(state_size))` halved by `conjugate_half`,
    B = weight * V^{-1} B_HiPPO and C = c V for a random real c (S4-PTD, PTD paper Sec. 4).
    Otherwise `s4d_init` and C is complex normal. Refuses an unknown `init` (ValueError).

    Example:
      >>> from jaxdl.nn.ssm.modes import s4d_modes
      >>> Lambda, B, C_basis = s4d_modes("lin", 4)  # S4D-Lin: Lambda_n = -1/2 + i pi n, B = 1
      >>> Lambda, B, C_basis
      (array([-0.5+0.j        , -0.5+3.14159265j]), array([1.+0.j, 1.+0.j]), None)
      >>> Lambda.flags.writeable  # cached: read-only
      False
    """
    if init not in S4D_LAYER_INITS:
        raise ValueError(f"init must be one of {S4D_LAYER_INITS}, got {init!r}")
    if init != "ptd":
        Lambda, B = s4d_init(init, state_size)
        return _read_only(Lambda, B, None)
    Lambda, V, V_inv, weight = _ptd_modes(state_size, dict(ptd_items))
    _, B_hippo = hippo_legs(state_size)
    return _read_only(Lambda, weight * (V_inv @ B_hippo), V)


@functools.lru_cache(maxsize=32)
def s5_block_modes(init: str, block_size: int, ptd_items: tuple = ()):
    """Host-side S5 modes of one block: (Lambda (m,), V (b, m), V_inv (m, b) weighted), read-only.

    "legs": eigendecomposition of the normal part of HiPPO-LegS (S5 paper Sec. 4.3, V unitary);
    "ptd": `ptd` of HiPPO-LegS (S5-PTD). Both halved exactly by `conjugate_half`, with the weight
    1/2 of real modes folded into V_inv. Refuses an unknown `init` (ValueError).

    Example:
      >>> import numpy as np
      >>> from jaxdl.nn.ssm.modes import s5_block_modes
      >>> from jaxdl.nn.ssm.hippo import hippo_legs
      >>> Lambda, V, V_inv = s5_block_modes("legs", 4)  # 4 states kept as 2 conjugate-pair modes
      >>> Lambda.real.round(6).tolist(), V.shape, V_inv.shape
      ([-0.5, -0.5], (4, 2), (2, 4))
      >>> A, _ = hippo_legs(4)
      >>> P = np.sqrt(np.arange(4) + 0.5)
      >>> bool(np.allclose(2 * (V @ np.diag(Lambda) @ V_inv).real, A + np.outer(P, P)))  # normal part of A
      True
    """
    if init not in S5_INITS:
        raise ValueError(f"init must be one of {S5_INITS}, got {init!r}")
    if init == "legs":
        Lambda, _, _, V = nplr_legs(block_size)
        Lambda, V, V_inv, weight = conjugate_half(Lambda, V, V.conj().T)
    else:
        Lambda, V, V_inv, weight = _ptd_modes(block_size, dict(ptd_items))
    return _read_only(Lambda, V, weight[:, None] * V_inv)
