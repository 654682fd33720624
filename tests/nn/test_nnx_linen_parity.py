"""NNX and Linen shells of every KAN and SSM layer take the same arguments, with the same defaults, in the
same order, so the two cannot drift apart (issue #16).

The two documented rules: Linen infers the input width from x, as `flax.linen.Dense` does (NNX `in_features`
is dropped, and a required NNX `out_features` is Linen's `features`); NNX `init` is Linen `init_kind`
(`init` is a Linen `Module` method).
"""

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdl.nn import kan, ssm
from jaxdl.nn.kan import linen as kan_linen
from jaxdl.nn.ssm import linen as ssm_linen
from tests.nn.kan.test_layers import _rename_lists

PACKAGES = [(kan, kan_linen), (ssm, ssm_linen)]
OUT_IS_FEATURES = {"KANLinear", "GRKAN", "AFKAN", "SelectableKAN"}  # required output width -> `features`


def _exported(module, base):
    return {
        name: obj
        for name in module.__all__
        if isinstance(obj := getattr(module, name), type) and issubclass(obj, base)
    }


PAIRS = [
    (name, nnx_cls, _exported(linen_module, nn.Module)[name])
    for package, linen_module in PACKAGES
    for name, nnx_cls in sorted(_exported(package, nnx.Module).items())
]


def test_every_layer_has_both_shells():
    for package, linen_module in PACKAGES:
        assert set(_exported(package, nnx.Module)) == set(_exported(linen_module, nn.Module)), (
            package.__name__
        )
    assert len(PAIRS) == 9


def _nnx_arguments(cls, name):
    """(name, default) of the NNX constructor, mapped to Linen's spelling by the two rules."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert all(p.kind is not p.VAR_KEYWORD for p in parameters), f"{name}: **kwargs hide arguments"
    mapped = []
    for p in parameters:
        if p.name in ("rngs", "in_features"):
            continue
        linen_name = {"init": "init_kind"}.get(p.name, p.name)
        if p.name == "out_features" and name in OUT_IS_FEATURES:
            linen_name = "features"
        mapped.append((linen_name, p.default))
    return mapped


def _linen_arguments(cls):
    fields = [f for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
    return [
        (f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default) for f in fields
    ]


@pytest.mark.parametrize(("name", "nnx_cls", "linen_cls"), PAIRS, ids=[p[0] for p in PAIRS])
def test_same_arguments_defaults_and_order(name, nnx_cls, linen_cls):
    assert _linen_arguments(linen_cls) == _nnx_arguments(nnx_cls, name)


@pytest.mark.parametrize(("nnx_cls", "config_cls"), [(ssm.S4D, ssm.S4DConfig), (ssm.S5, ssm.S5Config)])
def test_ssm_shells_take_exactly_the_config(nnx_cls, config_cls):
    config = [(f.name, f.default) for f in dataclasses.fields(config_cls)]
    config = [(n, inspect.Parameter.empty if d is dataclasses.MISSING else d) for n, d in config]
    nnx_arguments = [
        (p.name, p.default) for p in list(inspect.signature(nnx_cls.__init__).parameters.values())[1:-1]
    ]
    assert nnx_arguments == config


@pytest.mark.parametrize("kind", ["s4d", "s5"])
def test_sequence_model_nnx_and_linen_agree(kind):
    kwargs = dict(layers=2, ssm=kind, ssm_kwargs=dict(state_size=4, init="legs"), pool=None)
    model = ssm.SequenceModel(2, 8, 3, rngs=nnx.Rngs(0), **kwargs)
    twin = ssm_linen.SequenceModel(8, 3, **kwargs)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 2)), jnp.float32)
    variables = twin.init(jax.random.key(0), x)
    params = _rename_lists(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, variables["params"])
    np.testing.assert_allclose(twin.apply({"params": params}, x), model(x), rtol=1e-5, atol=1e-6)
