"""SDM output layer: exact kNN over a large exemplar memory against torch ``mm`` + ``topk``, and `predict`.

Size (issue #17): 1,024 queries x 1M exemplars x 1,000 dims, k = 128 and 2,048 (the reference code's
cap on q), on one GPU unless a row says otherwise. Every row records its median and, in
``extra_info``: the first-call time (compile + one run), the recall against a float64 brute force
on the first 64 queries, and the peer's median from the same run. Precisions:

* ``float32``: exact float32 products (``precision="highest"``; torch with TF32 off);
* ``tf32``: the backend default for float32 (TF32 on NVIDIA GPUs; torch with TF32 on);
* ``bf16``: bfloat16 products accumulated in float32, from a bf16 copy made once (torch: the same
  copy, ``mm`` in bf16).

The torch peer is the two-line search a PyTorch user writes, with the exemplar norms precomputed
(as our index does): ``d = |q|^2 - 2 q e^T + |e|^2; d.topk(k, largest=False)``.

Routes (``bf16``, where selection dominates): ``lax.top_k`` on the whole row (``levels=0``), one
level of group minima (``levels=1``), two levels with and without compacting the candidates under
the k-th group minimum before each final sort (`smallest_k`, the one-device route before), and
``lax.approx_min_k``; the default (`test_index_search`) is the split route on one device. Then: the
query block (one 4 GB score tile vs the default 1 GiB tiles), the ``refine`` margin (float32 without
it, bf16 with 64), 2 GPUs vs 1 (exemplars split once by the index; the selection split over queries
or a per-device top-k and a merge), `SDMHead.predict` end to end vs the kNN alone, and the eager `nearest_neighbours`
(index built per call, compiled once) vs ``index.search``.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks.common import SMALL
from jaxdl.nn.sdm import SDMHead, build_index, calibrate_thresholds, class_ecdf, nearest_neighbours
from jaxdl.nn.sdm import index as index_module
from jaxdl.nn.sdm.estimator import CalibrationPoints, ExemplarMemory, SDMState

if SMALL:
    EXEMPLARS, DIM, QUERIES, KS, RECALL_QUERIES = 20_000, 64, 64, (16, 128), 16
else:
    EXEMPLARS, DIM, QUERIES, KS, RECALL_QUERIES = 1_000_000, 1000, 1024, (128, 2048), 64
ROUNDS = 3 if SMALL else 5
PRECISIONS = ("float32", "tf32", "bf16")

torch = pytest.importorskip("torch") if not SMALL else None
_TORCH_MEDIANS: dict = {}


@pytest.fixture(scope="module")
def data():
    key_e, key_q = jax.random.split(jax.random.key(0))
    exemplars = jax.random.normal(key_e, (EXEMPLARS, DIM), jnp.float32)
    queries = jax.random.normal(key_q, (QUERIES, DIM), jnp.float32)
    return jax.block_until_ready((queries, exemplars))


@pytest.fixture(scope="module")
def truth(data):
    """Float64 brute-force neighbours of the first RECALL_QUERIES queries, ascending (k = max(KS))."""
    queries, exemplars = data
    q = np.asarray(queries[:RECALL_QUERIES], np.float64)
    if torch is not None and torch.cuda.is_available():
        e = torch.from_dlpack(exemplars).double()
        qt = torch.from_numpy(q).cuda()
        dist = (qt * qt).sum(1)[:, None] - 2 * qt @ e.T + (e * e).sum(1)[None, :]
        idx = dist.topk(max(KS), largest=False).indices.cpu().numpy()
        del e, dist
        torch.cuda.empty_cache()
        return idx
    e = np.asarray(exemplars, np.float64)
    dist = (q * q).sum(1)[:, None] - 2 * q @ e.T + (e * e).sum(1)[None, :]
    return np.argsort(dist, axis=1, kind="stable")[:, : max(KS)]


@pytest.fixture(scope="module")
def indexes(data):
    _, exemplars = data
    return {
        "float32": build_index(exemplars),
        "tf32": build_index(exemplars, precision=None),
        "bf16": build_index(exemplars, compute_dtype=jnp.bfloat16),
    }


def _recall(found, truth, k):
    found = np.asarray(found)[:RECALL_QUERIES, :k]
    return float(np.mean([len(np.intersect1d(f, t[:k])) / k for f, t in zip(found, truth, strict=True)]))


def _run(benchmark, fn, *, group, truth=None, k=None, peer=None, **info):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    benchmark.group = group
    benchmark.pedantic(lambda: jax.block_until_ready(fn()), rounds=ROUNDS, warmup_rounds=1)
    median = benchmark.stats.stats.median
    info.update(first_call_s=first, queries=QUERIES, exemplars=EXEMPLARS, dim=DIM, k=k)
    if truth is not None:
        info["recall"] = _recall(out[1], truth, k)
    if peer is not None and peer in _TORCH_MEDIANS:
        info["torch_ms"] = _TORCH_MEDIANS[peer] * 1e3
        info["x_torch"] = median / _TORCH_MEDIANS[peer]
    benchmark.extra_info.update(info)
    print(f"\nROW {group} {benchmark.name} median={median * 1e3:.2f}ms first={first:.2f}s {info}", flush=True)
    return median, out


@pytest.mark.skipif(SMALL, reason="the torch peer runs on the GPU machine")
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_mm_topk(benchmark, data, truth, precision, k):
    queries, exemplars = data
    q = torch.from_dlpack(queries)
    e = torch.from_dlpack(exemplars)
    e_sq = (e * e).sum(1)
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    if precision == "bf16":
        q, e = q.bfloat16(), e.bfloat16()

    def search():
        with torch.no_grad():
            dist = (q.float() * q.float()).sum(1)[:, None] - 2 * (q @ e.T) + e_sq[None, :]
            result = dist.topk(k, largest=False)
        torch.cuda.synchronize()
        return result.values, result.indices.cpu()

    search()
    benchmark.group = f"sdm knn k={k}"
    benchmark.pedantic(search, rounds=ROUNDS, warmup_rounds=1)
    _TORCH_MEDIANS[(precision, k)] = benchmark.stats.stats.median
    recall = _recall(search()[1].numpy(), truth, k)
    benchmark.extra_info.update(precision=precision, k=k, recall=recall, queries=QUERIES, exemplars=EXEMPLARS)
    print(f"\nROW torch {precision} k={k} median={benchmark.stats.stats.median * 1e3:.2f}ms recall={recall}")
    torch.backends.cuda.matmul.allow_tf32 = False


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_index_search(benchmark, data, truth, indexes, precision, k):
    """The default exact search (two levels of group minima) of a prebuilt index."""
    queries, _ = data
    index = indexes[precision]
    _run(
        benchmark,
        lambda: index.search(queries, k),
        group=f"sdm knn k={k}",
        truth=truth,
        k=k,
        peer=(precision, k),
        precision=precision,
        route="exact, levels=2",
    )


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize(
    "route", ["levels=0", "levels=1", "levels=2 no compaction", "levels=2 top_k_below", "approx_min_k"]
)
def test_selection_routes(benchmark, data, truth, indexes, route, k):
    """bf16 selection routes of `smallest_k` on the whole score rows (``sharded_selection="merge"``,
    the one-device route before the split route became the default there too): ``lax.top_k``
    (levels=0), one or two levels of group minima, the last sort on all k * g candidates or on
    those under the bound (`top_k_below`, the default before); and ``lax.approx_min_k``."""
    queries, _ = data
    index = indexes["bf16"]
    options = {"k": k, "query_block_size": None, "block_size": None, "recall_target": 0.95}
    if route == "approx_min_k":
        options.update(approximate=True)
    else:
        options.update(
            approximate=False,
            levels=int(route[len("levels=")]),
            compact="no compaction" not in route,
            sharded_selection="merge",
        )
    _run(
        benchmark,
        lambda: index_module._search(index, queries, None, **options),
        group=f"sdm knn k={k}",
        truth=truth,
        k=k,
        peer=("bf16", k),
        precision="bf16",
        route=route,
    )


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_one_query_block(benchmark, data, truth, indexes, precision):
    """All 1,024 queries in one step (a 4 GB score tile) instead of the default 1 GiB tiles."""
    queries, _ = data
    k = max(KS)
    _run(
        benchmark,
        lambda: indexes[precision].search(queries, k, query_block_size=QUERIES),
        group=f"sdm knn k={k}",
        truth=truth,
        k=k,
        peer=(precision, k),
        precision=precision,
        route="one query block",
    )


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("refine", [0, 64])
def test_refine_margin(benchmark, data, truth, indexes, refine, k):
    """The cost and recall of re-ranking the boundary by accurate distance (float32: 0 vs the default)."""
    queries, _ = data
    precision = "float32" if refine == 0 else "bf16"
    _run(
        benchmark,
        lambda: indexes[precision].search(queries, k, refine=refine),
        group=f"sdm knn k={k}",
        truth=truth,
        k=k,
        peer=(precision, k),
        precision=precision,
        route=f"refine={refine}",
    )


@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 devices")
@pytest.mark.parametrize("route", ["split", "split placed", "split compact", "split entries", "merge"])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_sharded_two_devices(benchmark, data, truth, precision, k, route):
    """2 GPUs: the selection split over queries (the default, "split": each device masks only the
    chosen groups it holds and sends the entries under each query's bound in slots for its expected
    share; "split compact": the same with room for all k groups and 2k entries, its fallback;
    "split entries": all k * g entries of the chosen groups, the route before those) or each
    device's top-k then a merge. The queries come from one GPU, as ``data`` makes them, except in
    "split placed", where they are on both GPUs before the call (as a model on the mesh makes them)."""
    queries, exemplars = data
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
    index = build_index(exemplars, compute_dtype=jnp.bfloat16 if precision == "bf16" else None, mesh=mesh)
    if route == "split placed":
        queries = jax.device_put(queries, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    exchange = {"split compact": "compact", "split entries": "entries"}.get(route, "owned")
    options = {"query_block_size": None, "block_size": None, "approximate": False, "recall_target": 0.95}
    _run(
        benchmark,
        lambda: index_module._search(
            index,
            queries,
            None,
            k=k,
            refine=index_module._default_refine(index),
            sharded_selection=route.split()[0],
            exchange=exchange,
            **options,
        ),  # fmt: skip
        group=f"sdm knn k={k} 2 devices",
        truth=truth,
        k=k,
        peer=(precision, k),
        precision=precision,
        devices=2,
        route=route,
    )


def test_nearest_neighbours_eager(benchmark, data):
    """The one-call wrapper, eagerly: builds the index (norms) each call, compiles once."""
    queries, exemplars = data
    k = max(KS)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: (
            compiles.append(event) if event.endswith("backend_compile_duration") else None
        )
    )
    _run(
        benchmark,
        lambda: nearest_neighbours(queries, exemplars, k),
        group=f"sdm knn k={k}",
        k=k,
        peer=("float32", k),
        precision="float32",
        route="nearest_neighbours eager",
    )
    before = len(compiles)
    jax.block_until_ready(nearest_neighbours(queries, exemplars, k))
    benchmark.extra_info["compiles_on_a_repeated_call"] = len(compiles) - before
    print(f"\nROW compiles on a repeated eager call: {len(compiles) - before}")


@pytest.fixture(scope="module")
def fitted_head(data):
    """An SDMHead whose memory is the benchmark's exemplars, with random labels and a calibration."""
    _, exemplars = data
    classes, features = 2, 4096 if not SMALL else 128
    head = SDMHead(features, classes, hidden=DIM, k=max(KS), rngs=nnx.Rngs(0))
    key_l, key_p, key_c = jax.random.split(jax.random.key(1), 3)
    labels = jax.random.randint(key_l, (EXEMPLARS,), 0, classes).astype(jnp.int32)
    predictions = jnp.where(jax.random.uniform(key_p, (EXEMPLARS,)) < 0.95, labels, (labels + 1) % classes)
    num_calibration = min(EXEMPLARS, 20_000)
    cal_labels = labels[:num_calibration]
    cal_q_prime = jax.random.uniform(key_c, (num_calibration,), minval=0, maxval=100)
    cal_probs = jax.nn.one_hot(cal_labels, classes) * 0.9 + 0.1 / classes
    state = SDMState(
        memory=ExemplarMemory(build_index(exemplars), labels, predictions.astype(jnp.int32)),
        distance_ecdf=class_ecdf(cal_q_prime, cal_labels, classes),
        calibration_points=CalibrationPoints(cal_probs, cal_q_prime, cal_labels),
        calibration=calibrate_thresholds(cal_probs, cal_q_prime, cal_labels, 0.9),
    )
    head.state.set_value(state)
    return head


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_predict_end_to_end(benchmark, fitted_head, data, precision):
    """`SDMHead.predict` (adaptor, kNN, q, d, q', both rules) against the same index's search alone."""
    x = jax.random.normal(jax.random.key(2), (QUERIES, fitted_head.in_features), jnp.float32)
    if precision == "bf16":
        fitted_head.index_exemplars(compute_dtype=jnp.bfloat16)
    index = fitted_head.state.get_value().memory.vectors
    _, exemplar_vectors = fitted_head(x)
    knn_alone = benchmark_median(lambda: index.search(exemplar_vectors, fitted_head.k))
    _run(
        benchmark,
        lambda: fitted_head.predict(x),
        group="sdm predict",
        k=fitted_head.k,
        precision=precision,
        knn_alone_ms=knn_alone * 1e3,
    )
    benchmark.extra_info["x_knn_alone"] = benchmark.stats.stats.median / knn_alone
    print(f"\nROW predict {precision}: x_knn_alone={benchmark.stats.stats.median / knn_alone:.3f}")


def benchmark_median(fn, rounds=ROUNDS):
    jax.block_until_ready(fn())
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))
