"""Where the time of the SDM kNN goes, on 1 and 2 GPUs, in one process (issue #17).

    PYTHONUNBUFFERED=1 python benchmarks/sdm_profile.py [--small]
        [--trace DIR | --owned DIR BEFORE_INDEX_PY | --overhead DIR | --latency]

Times (median of 5, after a first call whose time includes compilation), against the same arrays:
the bf16 GEMM alone and with the scores written out (the floors); the search on one GPU with and
without compacting the candidates under the k-th group minimum before the last sorts; on 2 GPUs
the split route (selection split over queries) with and without compaction, and the per-device
top-k + merge route;
float32 (``refine=16``), TF32 and bf16 + ``refine=64`` with their recall against float64; the
accurate distance's error against float64; `SDMHead.predict` against the kNN alone, with its parts
(the adaptor; the jitted function without the host-side input checks; the same with the epilogue
of before: q by ``cumprod``, ``searchsorted`` by a while loop); torch ``mm`` + ``topk`` as the
peer. Prints one ``ROW`` line per measurement. The flags run one section instead (`trace_rows`,
`owned_rows`: run E, `overhead_rows`: run E2, `latency_rows`: run E5). (Query chunks of one program, XLA's latency-hiding
scheduler, two branch-free variants of the last sort and run D's exchanges were measured with
earlier versions of this script: benchmarks/RESULTS.md.)
"""

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.nn.sdm import build_index
from jaxdl.nn.sdm import head as head_module
from jaxdl.nn.sdm import index as index_module
from jaxdl.nn.sdm._refine import accurate_sq_distances

SMALL = "--small" in sys.argv
N, M, B = (40_000, 64, 64) if SMALL else (1_000_000, 1000, 1024)
KS = (16, 128) if SMALL else (128, 2048)
RECALL_QUERIES = 16 if SMALL else 64


def timed(name, fn, rounds=5, **info):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    median = float(np.median(times)) * 1e3
    extra = " ".join(f"{k}={v}" for k, v in info.items())
    print(f"ROW {name:44s} median={median:8.3f}ms first={first:6.2f}s {extra}", flush=True)
    return median, out


def recall(found, truth, k):
    found = np.asarray(found)[:RECALL_QUERIES, :k]
    return float(np.mean([len(np.intersect1d(f, t[:k])) / k for f, t in zip(found, truth, strict=True)]))


def search(index, queries, k, **options):
    # Rows compact unless named "no compaction" (the default at every k when they were measured).
    defaults = dict(
        query_block_size=None, block_size=None, approximate=False, recall_target=0.95, compact=True
    )
    defaults.update(options)
    return lambda: index_module._search(index, queries, None, k=k, **defaults)


def main():
    print(jax.devices(), jax.__version__, flush=True)
    key_e, key_q = jax.random.split(jax.random.key(0))
    exemplars = jax.random.normal(key_e, (N, M), jnp.float32)
    queries = jax.random.normal(key_q, (B, M), jnp.float32)
    if "--trace" in sys.argv:  # --trace DIR: the default bf16 rows and a profiler trace only
        return trace_rows(exemplars, queries, sys.argv[sys.argv.index("--trace") + 1])
    if "--latency" in sys.argv:  # --latency: blocked against queued calls, program by program
        return latency_rows(exemplars, queries)
    if "--overhead" in sys.argv:  # --overhead DIR: what a call costs besides its kernels
        return overhead_rows(exemplars, queries, sys.argv[sys.argv.index("--overhead") + 1])
    if "--owned" in sys.argv:  # --owned DIR BASELINE: the owned exchange against BASELINE's index.py
        at = sys.argv.index("--owned")
        return owned_rows(exemplars, queries, sys.argv[at + 1], sys.argv[at + 2])
    truth, torch = _truth(exemplars, queries)
    main_rows(exemplars, queries, truth, torch)


def _truth(exemplars, queries):
    """The nearest max(KS) + 1 exemplars of the first queries by a float64 brute force, and torch
    (None where it is unavailable)."""
    q64 = np.asarray(queries[:RECALL_QUERIES], np.float64)
    try:
        import torch

        e = torch.from_dlpack(exemplars).double()
        qt = torch.from_numpy(q64).to(e.device)
        dist = (qt * qt).sum(1)[:, None] - 2 * qt @ e.T + (e * e).sum(1)[None, :]
        truth = dist.topk(max(KS) + 1, largest=False).indices.cpu().numpy()
        del e, dist
        torch.cuda.empty_cache()
    except Exception as err:  # CPU smoke run
        print("torch truth unavailable:", err)
        torch = None
        e = np.asarray(exemplars, np.float64)
        dist = (q64 * q64).sum(1)[:, None] - 2 * q64 @ e.T + (e * e).sum(1)[None, :]
        truth = np.argsort(dist, axis=1, kind="stable")[:, : max(KS) + 1]
    return truth, torch


def _bf16_indexes(exemplars, queries):
    """The bf16 index on one GPU and on two (None with one device) and the mesh, after timing the
    bf16 GEMM with its 4 GB of scores written (the floor)."""
    bf16 = build_index(exemplars, compute_dtype=jnp.bfloat16)
    scores = jax.jit(
        lambda q, v, norms: norms + jnp.dot(q.astype(jnp.bfloat16), v.T, preferred_element_type=jnp.float32)
    )
    timed("gemm bf16 + 4 GB of scores written", lambda: scores(queries, bf16.search_vectors, bf16.sq_norms))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",)) if jax.device_count() >= 2 else None
    bf16_2 = None if mesh is None else build_index(exemplars, compute_dtype=jnp.bfloat16, mesh=mesh)
    return bf16, bf16_2, mesh


def _trace(calls, out_dir):
    """A profiler trace of 3 calls of each named call at the largest k, summed (`_summarise`)."""
    for name, fn in calls.items():
        if f"k={max(KS)}" not in name:
            continue
        log_dir = f"{out_dir}/{name.replace(' ', '_').replace('=', '')}"
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            for _ in range(3):
                jax.block_until_ready(fn())
        _summarise(log_dir, name)


def main_rows(exemplars, queries, truth, torch):
    """Every row of the module docstring."""
    q64 = np.asarray(queries[:RECALL_QUERIES], np.float64)
    # Accuracy of the double-float distance on this device, against float64.
    rows = exemplars[jnp.asarray(truth[:, :64])]
    hi, lo = jax.jit(accurate_sq_distances)(queries[:RECALL_QUERIES], rows)
    ref = ((q64[:, None, :] - np.asarray(rows, np.float64)) ** 2).sum(-1)
    acc = np.asarray(hi, np.float64) + np.asarray(lo, np.float64)
    fast = np.asarray(jnp.sum(jnp.square(queries[:RECALL_QUERIES, None, :] - rows), -1), np.float64)
    print(f"ROW accurate distance max rel err {np.max(np.abs(acc - ref) / ref):.3e} (plain f32 "
          f"{np.max(np.abs(fast - ref) / ref):.3e})", flush=True)  # fmt: skip

    bf16 = build_index(exemplars, compute_dtype=jnp.bfloat16)
    f32 = build_index(exemplars)
    tf32 = build_index(exemplars, precision=None)

    def gemm(q, vectors):
        return jnp.dot(q.astype(jnp.bfloat16), vectors.T, preferred_element_type=jnp.float32)

    floor = jax.jit(lambda q, v: gemm(q, v).min(1))
    scores = jax.jit(lambda q, v, norms: norms + gemm(q, v))
    timed("gemm bf16 (row minimum fused)", lambda: floor(queries, bf16.search_vectors))
    timed("gemm bf16 + 4 GB of scores written", lambda: scores(queries, bf16.search_vectors, bf16.sq_norms))

    def row(name, index, k, **options):
        try:
            _, out = timed(name, search(index, queries, k, **options))
            print(f"    recall {recall(out[1], truth, k)}", flush=True)
        except Exception as err:  # keep the other rows
            print(f"ROW {name} FAILED {type(err).__name__}: {str(err)[:300]}", flush=True)

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",)) if jax.device_count() >= 2 else None
    for k in KS:
        row(f"1gpu bf16 k={k}", bf16, k)
        row(f"1gpu bf16 k={k} no compaction", bf16, k, compact=False)
        if mesh is not None:
            bf16_2 = build_index(exemplars, compute_dtype=jnp.bfloat16, mesh=mesh)
            row(f"2gpu bf16 k={k} split", bf16_2, k)
            row(f"2gpu bf16 k={k} split no compaction", bf16_2, k, compact=False)
            row(f"2gpu bf16 k={k} merge", bf16_2, k, sharded_selection="merge")
            del bf16_2
        row(f"1gpu f32 k={k} refine=16", f32, k, refine=16)
        row(f"1gpu f32 k={k} refine=16 no compaction", f32, k, refine=16, compact=False)
        if mesh is not None:
            f32_2 = build_index(exemplars, mesh=mesh)
            row(f"2gpu f32 k={k} split refine=16", f32_2, k, refine=16)
            del f32_2
        row(f"1gpu tf32 k={k}", tf32, k)
        row(f"1gpu bf16 k={k} refine=64", bf16, k, refine=64)

    predict_rows(exemplars, f32, max(KS))

    if torch is not None:
        _torch_peer(torch, queries, exemplars, ("bf16", "float32", "tf32"))


def trace_rows(exemplars, queries, out_dir):
    """The default search on 1 and 2 GPUs (bf16), then a profiler trace of 3 calls of each at the
    largest k, summed by kernel per device (`_summarise`)."""
    bf16, bf16_2, mesh = _bf16_indexes(exemplars, queries)
    calls = {}
    for k in KS:
        calls[f"1gpu k={k}"] = search(bf16, queries, k, compact=None)  # the index's defaults
        if bf16_2 is not None:
            calls[f"2gpu k={k}"] = search(bf16_2, queries, k, compact=None)
    for name, fn in calls.items():
        timed(f"default bf16 {name}", fn)
    _trace(calls, out_dir)


def owned_rows(exemplars, queries, out_dir, baseline):
    """Run E: the owned exchange (each device masks and compacts only the chosen groups it holds, in
    slots for its expected share; the common case queued before the branch) against ``baseline``, a
    copy of an earlier ``jaxdl/nn/sdm/index.py`` searching the same index in the same process. 1 and
    2 GPUs (queries on one GPU as made, and placed on both), bf16 and float32, interleaved passes,
    outputs compared; the torch peer; profiler traces with the gaps between kernels."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("index_before", baseline)
    before = importlib.util.module_from_spec(spec)
    sys.modules["index_before"] = before  # its dataclass looks itself up there
    spec.loader.exec_module(before)

    def search_before(index, queries, k, **options):
        defaults = dict(query_block_size=None, block_size=None, approximate=False, recall_target=0.95)
        defaults.update(options)
        return lambda: before._search(index, queries, None, k=k, **defaults)

    bf16, bf16_2, mesh = _bf16_indexes(exemplars, queries)
    placed = None
    if mesh is not None:
        placed = jax.device_put(queries, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    calls = {}
    for k in KS:
        calls[f"1gpu bf16 k={k} before"] = search_before(bf16, queries, k)
        calls[f"1gpu bf16 k={k}"] = search(bf16, queries, k, compact=None)
        if bf16_2 is not None:
            calls[f"2gpu bf16 k={k} before"] = search_before(bf16_2, queries, k)
            calls[f"2gpu bf16 k={k}"] = search(bf16_2, queries, k, compact=None)
            calls[f"2gpu bf16 k={k} before, placed"] = search_before(bf16_2, placed, k)
            calls[f"2gpu bf16 k={k} placed"] = search(bf16_2, placed, k, compact=None)
            calls[f"2gpu bf16 k={k} compact, placed"] = search(
                bf16_2, placed, k, compact=None, exchange="compact"
            )
    _interleaved(calls, queries, passes=5)
    _floors(bf16, bf16_2, queries, placed)
    for name, fn in calls.items():  # dispatched 10 at a time, one wait: the runtime's latency hidden
        if "before" not in name and "compact" not in name:
            _pipelined(name, fn)
    f32 = build_index(exemplars)
    f32_calls = {}
    for k in KS:
        f32_calls[f"1gpu f32 k={k} refine=16 before"] = search_before(f32, queries, k, refine=16)
        f32_calls[f"1gpu f32 k={k} refine=16"] = search(f32, queries, k, compact=None, refine=16)
    if mesh is not None:
        f32_2 = build_index(exemplars, mesh=mesh)
        for k in KS:
            f32_calls[f"2gpu f32 k={k} refine=16 before, placed"] = search_before(f32_2, placed, k, refine=16)
            f32_calls[f"2gpu f32 k={k} refine=16, placed"] = search(f32_2, placed, k, compact=None, refine=16)
    _interleaved(f32_calls, queries, passes=2)
    del f32
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        _torch_peer(torch, queries, exemplars, ("bf16",), rounds=7)
    traced = [f"1gpu bf16 k={max(KS)}", f"2gpu bf16 k={max(KS)} placed", f"2gpu bf16 k={min(KS)} placed"]
    for name in traced:
        if name not in calls:
            continue
        log_dir = f"{out_dir}/{name.replace(' ', '_').replace('=', '').replace(',', '')}"
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            for _ in range(3):
                jax.block_until_ready(calls[name]())
        _gaps(log_dir, name)


def overhead_rows(exemplars, queries, out_dir):
    """Run E2: the time of a call besides its kernels (about 0.5 ms in run E's traces, 1 and 2 GPUs).
    The default bf16 search; the same without its branch (`_without_branch`; in run E2 itself it
    went through ``Compiled.__call__``, a slower dispatch); calls dispatched 10 at a time before one wait; a trace of
    each with the host's events inside the largest gap between two calls (`_host_in_gaps`)."""
    bf16, bf16_2, mesh = _bf16_indexes(exemplars, queries)
    placed = jax.device_put(queries, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    calls = {}
    for k in KS:
        for n, index, q in ((1, bf16, queries), (2, bf16_2, placed)):
            calls[f"{n}gpu k={k}"] = search(index, q, k, compact=None)
            calls[f"{n}gpu k={k} no branch"] = _without_branch(index, q, k)
    _interleaved(calls, queries)
    for name, fn in calls.items():
        if "no branch" not in name:
            _pipelined(name, fn)
    for name in (
        f"1gpu k={min(KS)}",
        f"2gpu k={min(KS)}",
        f"2gpu k={min(KS)} no branch",
        f"2gpu k={max(KS)}",
    ):
        log_dir = f"{out_dir}/{name.replace(' ', '_').replace('=', '')}"
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            for _ in range(3):
                jax.block_until_ready(calls[name]())
        _gaps(log_dir, name, top=4)
        _host_in_gaps(log_dir, name)


def latency_rows(exemplars, queries):
    """Run E5: which part of the search makes a blocked call cost more than a queued one. At the
    smaller k, 1 and 2 GPUs (queries placed), each program blocked and queued (`_pipelined`): the
    bf16 GEMM with its scores written; the same reduced to the group minima; and their top-k; the
    search without its branch (`_without_branch`, both k); the search (both k)."""
    from jax.sharding import PartitionSpec

    bf16, bf16_2, mesh = _bf16_indexes(exemplars, queries)
    placed = jax.device_put(queries, jax.sharding.NamedSharding(mesh, PartitionSpec()))
    k = min(KS)
    group = index_module._split_group_size(N // 2, 2, k)

    def parts(q, v, norms, stage):
        scores = norms + jnp.dot(q.astype(jnp.bfloat16), v.T, preferred_element_type=jnp.float32)
        if stage == "scores":
            return scores
        minima = jnp.min(scores.reshape(q.shape[0], -1, group), axis=2)
        return minima if stage == "minima" else jax.lax.top_k(-minima, k)

    calls = {}
    for stage in ("scores", "minima", "minima top-k"):
        one = jax.jit(functools.partial(parts, stage=stage))
        calls[f"1gpu gemm + {stage}"] = lambda f=one: f(queries, bf16.search_vectors, bf16.sq_norms)
        two = jax.jit(
            jax.shard_map(
                functools.partial(parts, stage=stage), mesh=mesh, check_vma=False,
                in_specs=(PartitionSpec(), PartitionSpec("data"), PartitionSpec("data")),
                out_specs=PartitionSpec(None, "data") if stage != "minima top-k" else PartitionSpec("data"),
            )
        )  # fmt: skip
        calls[f"2gpu gemm + {stage}"] = lambda f=two: f(placed, bf16_2.search_vectors, bf16_2.sq_norms)
    for kk in KS:
        for n, i, q in ((1, bf16, queries), (2, bf16_2, placed)):
            calls[f"{n}gpu search k={kk}, no branch"] = _without_branch(i, q, kk)
            calls[f"{n}gpu search k={kk}"] = search(i, q, kk, compact=None)
    for name, fn in calls.items():
        timed(name, fn, rounds=15)
        _pipelined(name, fn)


def _without_branch(index, queries, k):
    """The search traced with every ``lax.cond`` taking its first branch (exact only for inputs that
    take it), so with no read of a predicate to the host: traced and cached in the first call, under
    the patch; later calls take jit's C++ fast path, as the search's own calls do."""
    fn = jax.jit(
        functools.partial(
            index_module._search_impl, k=k, query_block_size=None, block_size=None, approximate=False,
            recall_target=0.95,
        )
    )  # fmt: skip
    cond = jax.lax.cond
    jax.lax.cond = lambda pred, true_fun, false_fun, *operands: true_fun(*operands)
    try:
        jax.block_until_ready(fn(index, queries, None))
    finally:
        jax.lax.cond = cond
    return functools.partial(fn, index, queries, None)


def _host_in_gaps(log_dir, name, top=25):
    """The host's events overlapping the largest idle gap of the first device (between two calls),
    by their time inside it."""
    loaded = _load_trace(log_dir, f"HOST {name}")
    if loaded is None:
        return
    events, processes = loaded
    devices = [p for p, n in processes.items() if "GPU" in n.upper() or "DEVICE" in n.upper()]
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("pid") == min(devices, default=None) and e.get("ph") == "X" and "dur" in e)  # fmt: skip
    if not spans:
        return
    gap, end = (0.0, 0.0, 0.0), spans[0][1]
    for start, stop in spans:
        if start - end > gap[0]:
            gap = (start - end, end, start)
        end = max(end, stop)
    _, lo, hi = gap
    print(f"HOST {name}: gap {hi - lo:.1f} us", flush=True)
    inside = []
    for e in events:
        if e.get("ph") != "X" or "dur" not in e or e.get("pid") in devices:
            continue
        overlap = min(hi, e["ts"] + e["dur"]) - max(lo, e["ts"])
        if overlap > 0:
            inside.append((overlap, e["ts"] - lo, e["dur"], e["name"][:90], e.get("tid")))
    for overlap, offset, dur, event, tid in sorted(inside, reverse=True)[:top]:
        print(f"HOST   {overlap:8.1f} us in gap (starts {offset:+9.1f} us, {dur:9.1f} us long, tid {tid})  {event}",
              flush=True)  # fmt: skip


def _pipelined(name, fn, calls=10, rounds=5):
    """Per call, ``calls`` calls dispatched before one wait (median of ``rounds``)."""
    if jax.default_backend() == "cpu":  # CPU collectives stall when queued
        return
    jax.block_until_ready(fn())
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready([fn() for _ in range(calls)])
        times.append((time.perf_counter() - start) / calls)
    print(f"ROW {name + ' pipelined':44s} median={np.median(times) * 1e3:8.3f}ms", flush=True)


def _floors(bf16, bf16_2, queries, placed):
    """What a call costs without the search, 1 GPU and 2: a jitted ``q + 1`` (the runtime's latency
    per blocked call), the same over the mesh with one all-reduce, and the bf16 GEMM with its scores
    written (2 GPUs: each its rows, no collective), blocked and pipelined."""
    from jax.sharding import PartitionSpec

    def gemm(q, v, norms):
        return norms + jnp.dot(q.astype(jnp.bfloat16), v.T, preferred_element_type=jnp.float32)

    rows = [("1gpu trivial q + 1", jax.jit(lambda q: q + 1), (queries,)),
            ("1gpu gemm bf16 + scores", jax.jit(gemm), (queries, bf16.search_vectors, bf16.sq_norms))]  # fmt: skip
    if bf16_2 is not None:
        mesh, axis = bf16_2.mesh, bf16_2.axis_name
        trivial = jax.shard_map(
            lambda q: jax.lax.psum(q[:1] + 1, axis),
            mesh=mesh,
            in_specs=PartitionSpec(),
            out_specs=PartitionSpec(),
        )
        sharded = jax.shard_map(
            gemm, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(axis), PartitionSpec(axis)),
            out_specs=PartitionSpec(None, axis),
        )  # fmt: skip
        rows += [("2gpu trivial q + 1 and a psum", jax.jit(trivial), (placed,)),
                 ("2gpu gemm bf16 + scores", jax.jit(sharded), (placed, bf16_2.search_vectors, bf16_2.sq_norms))]  # fmt: skip
    for name, fn, args in rows:
        timed(f"floor {name}", lambda fn=fn, args=args: fn(*args), rounds=15)
        _pipelined(f"floor {name}", lambda fn=fn, args=args: fn(*args))


def _interleaved(calls, queries, passes=3, rounds=5):
    """First calls (compile + run), then ``passes`` passes over all calls of ``rounds`` each; prints
    the median of all rounds and each pass's, and whether each row's output equals the first row's
    of its k and precision (1 and 2 GPUs: their GEMMs may round differently)."""
    outputs, first, times = {}, {}, {name: [] for name in calls}
    for name, fn in list(calls.items()):
        start = time.perf_counter()
        try:
            outputs[name] = jax.block_until_ready(fn())
        except Exception as err:  # keep the other rows
            print(f"ROW {name} FAILED {type(err).__name__}: {str(err)[:400]}", flush=True)
            del calls[name], times[name]
            continue
        first[name] = time.perf_counter() - start
    for _ in range(passes):
        for name, fn in calls.items():
            for _ in range(rounds):
                start = time.perf_counter()
                jax.block_until_ready(fn())
                times[name].append(time.perf_counter() - start)
    reference = {}
    for name in calls:
        key = name.split(" k=")[1].split()[0] + name.split()[1]  # k and precision
        dist, idx = (np.asarray(a) for a in outputs[name])
        if key not in reference:
            reference[key] = (name, dist, idx)
        ref_name, ref_dist, ref_idx = reference[key]
        same = (
            f"same as '{ref_name}': idx {np.array_equal(idx, ref_idx)}, dist {np.array_equal(dist, ref_dist)}"
        )
        per_pass = [float(np.median(times[name][i * rounds : (i + 1) * rounds])) * 1e3 for i in range(passes)]
        print(
            f"ROW {name:40s} median={np.median(times[name]) * 1e3:8.3f}ms passes="
            f"{'/'.join(f'{t:.3f}' for t in per_pass)} first={first[name]:6.2f}s {same}",
            flush=True,
        )


def _torch_peer(torch, queries, exemplars, precisions, rounds=5):
    """torch ``mm`` + ``topk`` with the exemplar norms precomputed, medians of ``rounds``."""
    q, e = torch.from_dlpack(queries), torch.from_dlpack(exemplars)
    e_sq = (e * e).sum(1)
    for precision in precisions:
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        qq, ee = (q.bfloat16(), e.bfloat16()) if precision == "bf16" else (q, e)
        for k in KS:

            def peer(qq=qq, ee=ee, k=k):
                with torch.no_grad():
                    d = (q * q).sum(1)[:, None] - 2 * (qq @ ee.T) + e_sq[None, :]
                    r = d.topk(k, largest=False)
                torch.cuda.synchronize()
                return r

            peer()
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                peer()
                times.append(time.perf_counter() - start)
            print(f"ROW torch {precision} k={k} median={np.median(times) * 1e3:.3f}ms", flush=True)


def _gaps(log_dir, name, top=14):
    """Per device of a perfetto trace of 3 calls: the busy time (union of its events), and the
    largest idle gaps between events with the events on either side."""
    loaded = _load_trace(log_dir, f"GAPS {name}")
    if loaded is None:
        return
    events, processes = loaded
    for pid, process in sorted(processes.items()):
        if "GPU" not in process.upper() and "DEVICE" not in process.upper():
            continue
        spans = sorted((e["ts"], e["ts"] + e["dur"], e["name"][:60]) for e in events
                       if e.get("pid") == pid and e.get("ph") == "X" and "dur" in e)  # fmt: skip
        if not spans:
            continue
        gaps, busy, end, last = [], 0.0, spans[0][0], spans[0][2]
        for start, stop, event in spans:
            if start > end:
                gaps.append((start - end, last, event))
            busy += max(0.0, stop - max(start, end))
            if stop > end:
                end, last = stop, event
        total = end - spans[0][0]
        small = [g for g in gaps if g[0] < 300]
        print(
            f"GAPS {name} | {process} | span {total / 3e3:.3f} ms busy {busy / 3e3:.3f} ms per call; "
            f"{len(small) / 3:.0f} gaps < 300 us per call summing {sum(g[0] for g in small) / 3e3:.3f} ms",
            flush=True,
        )
        for gap, before, after in sorted(gaps, reverse=True)[:top]:
            print(f"GAPS   {gap:9.1f} us  after {before}  before {after}", flush=True)
    _summarise(log_dir, name, top=25)


def _load_trace(log_dir, tag):
    """The events of the perfetto trace under ``log_dir`` and the process names by pid, or None."""
    import glob
    import gzip
    import json

    files = glob.glob(f"{log_dir}/**/*perfetto_trace.json.gz", recursive=True)
    if not files:
        print(f"{tag}: no perfetto trace under {log_dir}", flush=True)
        return None
    with gzip.open(files[0], "rt") as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    processes = {
        e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    return events, processes


def _summarise(log_dir, name, top=18):
    """Per process (device) of a perfetto trace: the summed duration of each event name / 3 calls."""
    import collections

    loaded = _load_trace(log_dir, f"TRACE {name}")
    if loaded is None:
        return
    events, processes = loaded
    totals = collections.defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            totals[(processes.get(e["pid"], str(e["pid"])), e["name"][:70])] += e["dur"] / 3
    for process in sorted({p for p, _ in totals}):
        if "GPU" not in process.upper() and "DEVICE" not in process.upper():
            continue
        rows = sorted(((t, n) for (p, n), t in totals.items() if p == process), reverse=True)
        print(f"TRACE {name} | {process} | total {sum(t for t, _ in rows) / 1e3:.3f} ms per call", flush=True)
        for t, n in rows[:top]:
            print(f"TRACE   {t / 1e3:8.3f} ms  {n}", flush=True)


def predict_rows(exemplars, index, k):
    """`SDMHead.predict` (adaptor 4,096 -> M -> 2, kNN, q, d, q', both rules) vs the kNN alone."""
    from flax import nnx

    from jaxdl.nn.sdm import SDMHead, calibrate_thresholds, class_ecdf
    from jaxdl.nn.sdm.estimator import CalibrationPoints, ExemplarMemory, SDMState

    classes = 2
    head = SDMHead(4096, classes, hidden=M, k=k, rngs=nnx.Rngs(0))
    key_l, key_p, key_c, key_x = jax.random.split(jax.random.key(1), 4)
    labels = jax.random.randint(key_l, (N,), 0, classes).astype(jnp.int32)
    predictions = jnp.where(jax.random.uniform(key_p, (N,)) < 0.95, labels, (labels + 1) % classes)
    cal_labels = labels[:20_000]
    cal_q_prime = jax.random.uniform(key_c, (cal_labels.shape[0],), minval=0, maxval=100)
    cal_probs = jax.nn.one_hot(cal_labels, classes) * 0.9 + 0.1 / classes
    head.state.set_value(
        SDMState(
            memory=ExemplarMemory(index, labels, predictions.astype(jnp.int32)),
            distance_ecdf=class_ecdf(cal_q_prime, cal_labels, classes),
            calibration_points=CalibrationPoints(cal_probs, cal_q_prime, cal_labels),
            calibration=calibrate_thresholds(cal_probs, cal_q_prime, cal_labels, 0.9),
        )
    )
    x = jax.random.normal(key_x, (B, 4096), jnp.float32)
    adaptor = jax.jit(head_module._adaptor)
    old = jax.jit(_predict_before(), static_argnums=(3, 4))
    for precision in ("float32", "bf16"):
        if precision == "bf16":
            head.index_exemplars(compute_dtype=jnp.bfloat16)
        state = head.state.get_value()
        searched = state.memory.vectors
        params = head._adaptor_params()  # the same weights in both rounds
        vectors = head(x)[1]
        alone, _ = timed(
            f"knn alone for predict {precision} k={k}", lambda s=searched, v=vectors: s.search(v, k)
        )
        whole, _ = timed(f"SDMHead.predict {precision} k={k}", lambda: head.predict(x))
        timed(
            f"_predict (no host checks) {precision}",
            lambda st=state, p=params: head_module._predict(p, st, x, k, ()),
        )
        timed(f"_predict, previous epilogue {precision}", lambda st=state, p=params: old(p, st, x, k, ()))
        timed(f"adaptor alone {precision}", lambda p=params: adaptor(p, x))
        print(f"ROW predict / knn alone {precision}: {whole / alone:.3f}", flush=True)


def _predict_before():
    """`_predict` traced with the epilogue of the last commit before this profile: q by ``cumprod``
    (a reduce-window of width k) and ``searchsorted`` by a while loop, to measure what they cost."""
    from jaxdl.nn.sdm import calibration, estimator, similarity

    def similarity_q(neighbours, predictions, labels, exemplar_predictions):
        neighbour_labels, neighbour_predictions = labels[neighbours], exemplar_predictions[neighbours]
        match = (neighbour_labels == neighbour_predictions) & (neighbour_predictions == predictions[:, None])
        return jnp.sum(jnp.cumprod(match.astype(jnp.int32), axis=1), axis=1)

    def searchsorted(row, x):
        return jnp.searchsorted(row, x, side="left")

    def traced(*args):
        saved = estimator.similarity_q, similarity._searchsorted, calibration._searchsorted
        estimator.similarity_q, similarity._searchsorted, calibration._searchsorted = (
            similarity_q, searchsorted, searchsorted
        )  # fmt: skip
        try:
            return head_module._predict.__wrapped__(*args)
        finally:
            estimator.similarity_q, similarity._searchsorted, calibration._searchsorted = saved

    return traced


if __name__ == "__main__":
    main()
