"""SDM output layer: exact kNN over a large exemplar memory, and the whole `SDMHead.predict` path.

kNN (1M exemplars x 1000 dims on an accelerator, k = 2048 as in the reference code): the blocked
search in float32 at "highest" precision (exact), at default precision (TF32 on an H100) and with
bfloat16 products, beside the unblocked dense baseline (one [B, N] distance matrix, then top_k). Each
records its floor, max(2·B·N·M flops / peak, N·M·bytes / bandwidth) at the H100 SXM datasheet peaks
below; queries/s = queries / median.

`predict`: adaptor forward + kNN + q, d, SDM outputs, q', both admission rules, beside the softmax
head it replaces (the same two Dense layers and a softmax, no search).
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from benchmarks.common import SMALL
from jaxdl.nn.sdm import SDMHead, calibrate_thresholds, class_ecdf, nearest_neighbours
from jaxdl.nn.sdm.estimator import CalibrationPoints, ExemplarMemory, SDMState

H100_PEAK_FLOPS = {"highest": 67e12, "default": 495e12, "bfloat16": 989e12}  # f32, TF32, bf16 dense
H100_BANDWIDTH = 3.35e12  # bytes/s, HBM3

if SMALL:
    EXEMPLARS, DIM, QUERIES, K, BLOCK, FEATURES, CLASSES = 4096, 64, 64, 32, 1024, 128, 4
else:
    EXEMPLARS, DIM, QUERIES, K, BLOCK, FEATURES, CLASSES = 1_000_000, 1000, 1024, 2048, 65536, 4096, 2


@pytest.fixture(scope="module")
def data():
    key_e, key_q = jax.random.split(jax.random.key(0))
    exemplars = jax.random.normal(key_e, (EXEMPLARS, DIM), jnp.float32)
    queries = jax.random.normal(key_q, (QUERIES, DIM), jnp.float32)
    return jax.block_until_ready((queries, exemplars))


def _floor_info(benchmark, mode, element_bytes):
    flops = 2 * QUERIES * EXEMPLARS * DIM
    bytes_moved = EXEMPLARS * DIM * element_bytes
    benchmark.group = "sdm knn"
    benchmark.extra_info.update(
        queries=QUERIES,
        exemplars=EXEMPLARS,
        dim=DIM,
        k=K,
        flop=flops,
        bytes=bytes_moved,
        h100_floor_ms=1e3 * max(flops / H100_PEAK_FLOPS[mode], bytes_moved / H100_BANDWIDTH),
    )


@pytest.mark.parametrize("mode", ["highest", "default", "bfloat16"])
def test_knn_blocked(benchmark, data, mode):
    queries, exemplars = data
    options = (
        {"compute_dtype": jnp.bfloat16}
        if mode == "bfloat16"
        else {"precision": mode if mode == "highest" else None}
    )
    search = jax.jit(lambda q, e: nearest_neighbours(q, e, K, block_size=BLOCK, **options))
    jax.block_until_ready(search(queries, exemplars))
    _floor_info(benchmark, mode, 4)
    benchmark.extra_info["block_size"] = BLOCK
    benchmark.pedantic(lambda: jax.block_until_ready(search(queries, exemplars)), rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("mode", ["highest", "bfloat16"])
def test_knn_dense_baseline(benchmark, data, mode):
    """The whole [B, N] distance matrix at once, then one top_k: the unblocked reference."""
    queries, exemplars = data
    dtype = jnp.bfloat16 if mode == "bfloat16" else jnp.float32

    @jax.jit
    def search(q, e):
        cross = jnp.dot(
            q.astype(dtype), e.astype(dtype).T, precision="highest", preferred_element_type=jnp.float32
        )
        dist = jnp.sum(q * q, 1)[:, None] - 2 * cross + jnp.sum(e * e, 1)[None, :]
        neg, index = jax.lax.top_k(-dist, K)
        return -neg, index

    jax.block_until_ready(search(queries, exemplars))
    _floor_info(benchmark, mode, 4)
    benchmark.pedantic(lambda: jax.block_until_ready(search(queries, exemplars)), rounds=10, warmup_rounds=2)


@pytest.fixture(scope="module")
def fitted_head(data):
    """An SDMHead whose memory is the benchmark's exemplars, with random labels and a calibration."""
    _, exemplars = data
    head = SDMHead(FEATURES, CLASSES, hidden=DIM, k=K, rngs=nnx.Rngs(0))
    key_l, key_p, key_c = jax.random.split(jax.random.key(1), 3)
    labels = jax.random.randint(key_l, (EXEMPLARS,), 0, CLASSES)
    predictions = jnp.where(jax.random.uniform(key_p, (EXEMPLARS,)) < 0.95, labels, (labels + 1) % CLASSES)
    num_calibration = min(EXEMPLARS, 20_000)
    cal_labels = labels[:num_calibration]
    cal_q_prime = jax.random.uniform(key_c, (num_calibration,), minval=0, maxval=100)
    cal_probs = jax.nn.one_hot(cal_labels, CLASSES) * 0.9 + 0.1 / CLASSES
    calibration = calibrate_thresholds(cal_probs, cal_q_prime, cal_labels, 0.9)
    state = SDMState(
        memory=ExemplarMemory(exemplars, labels.astype(jnp.int32), predictions.astype(jnp.int32)),
        distance_ecdf=class_ecdf(cal_q_prime, cal_labels, CLASSES),
        calibration_points=CalibrationPoints(cal_probs, cal_q_prime, cal_labels.astype(jnp.int32)),
        calibration=calibration,
    )
    head.state.set_value(state)
    return head


def test_predict_path(benchmark, fitted_head):
    x = jax.random.normal(jax.random.key(2), (QUERIES, FEATURES), jnp.float32)
    jax.block_until_ready(fitted_head.predict(x, block_size=BLOCK))
    benchmark.group = "sdm predict"
    benchmark.extra_info.update(queries=QUERIES, exemplars=EXEMPLARS, dim=DIM, k=K)
    benchmark.pedantic(
        lambda: jax.block_until_ready(fitted_head.predict(x, block_size=BLOCK)), rounds=10, warmup_rounds=2
    )


def test_predict_softmax_head_baseline(benchmark, fitted_head):
    """The softmax layer an SDM head replaces: the same Dense layers, no search."""
    x = jax.random.normal(jax.random.key(2), (QUERIES, FEATURES), jnp.float32)
    forward = nnx.jit(lambda head, x: jax.nn.softmax(head(x)[0]))
    jax.block_until_ready(forward(fitted_head, x))
    benchmark.group = "sdm predict"
    benchmark.extra_info.update(queries=QUERIES)
    benchmark.pedantic(lambda: jax.block_until_ready(forward(fitted_head, x)), rounds=10, warmup_rounds=2)
