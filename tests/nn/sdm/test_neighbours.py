"""Exact kNN (`ExemplarIndex`, `nearest_neighbours`) against a NumPy float64 brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxdl.nn.sdm import build_index, nearest_neighbours
from jaxdl.nn.sdm import index as index_module
from jaxdl.nn.sdm._refine import accurate_sq_distances
from jaxdl.nn.sdm._selection import _prefix_count, compact_chosen, keep_bits, smallest_k, top_k_below
from jaxdl.nn.sdm._split import _owned_capacities, _split_group_size
from tests.reference import sdm as ref


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    return rng.normal(size=(29, 6)).astype(np.float32), rng.normal(size=(203, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def index(points):
    return build_index(points[1])


@pytest.fixture
def compile_count():
    """Counts XLA compilations (jax.monitoring events ending in backend_compile_duration)."""
    events = []

    def listener(event, duration, **_):
        if event.endswith("backend_compile_duration"):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield lambda: len(events)
    jax.monitoring.unregister_event_duration_listener(listener)


# 203 rows: blocks of 32 and 50 do not divide N; 7 is smaller than k; k = N searches everything.
@pytest.mark.parametrize(
    "k, block_size, query_block_size", [(9, None, None), (9, 32, None), (9, 50, 8), (9, 7, 29), (203, 64, 10)]
)
def test_matches_brute_force(points, index, k, block_size, query_block_size):
    queries, exemplars = points
    expected_dist, expected_idx = ref.knn(queries, exemplars, k)
    dist, idx = index.search(queries, k, block_size=block_size, query_block_size=query_block_size)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(dist, expected_dist, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("many_ties", [False, True])
def test_top_k_below_compacts_or_falls_back_exactly(many_ties):
    """Candidates under the bound compacted in order (few under it) or the whole row sorted (ties at
    the bound exceed the 2k slots): the same k smallest, ties to the lower position, as NumPy."""
    rng = np.random.default_rng(8)
    k = 20
    values = rng.normal(size=(4, 600)).astype(np.float32)
    if many_ties:
        values = np.round(values).astype(np.float32)  # hundreds of entries equal the bound
    bound = np.sort(values, axis=1)[:, k + 3]  # at least k entries at or below it
    assert ((values <= bound[:, None]).sum(1) > 2 * k).any() == many_ties
    vals, position = jax.jit(top_k_below, static_argnums=2)(values, bound, k)
    expected = np.argsort(values, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(position, expected)
    np.testing.assert_array_equal(vals, np.take_along_axis(values, expected, axis=1))


def test_prefix_count_is_exact_over_many_blocks():
    keep = np.random.default_rng(9).uniform(size=(2, 40_000)) < 0.7
    np.testing.assert_array_equal(jax.jit(_prefix_count)(keep), np.cumsum(keep, axis=1))


@pytest.mark.parametrize("ties", [True, False])
def test_two_stage_selection_is_exact(ties):
    """Rows long enough for two levels of group minima; integer values make ties everywhere (the
    final sorts take whole rows), normal values leave about k candidates under the bound (they are
    compacted)."""
    rng = np.random.default_rng(1)
    if ties:
        values = rng.integers(0, 40, size=(3, 20_000)).astype(np.float32)
    else:
        values = rng.normal(size=(3, 20_000)).astype(np.float32)
    values[1, 7] = np.inf
    for k in (1, 64, 1500):
        vals, idx = jax.jit(smallest_k, static_argnums=1)(values, k)
        expected = np.argsort(values, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_array_equal(vals, np.take_along_axis(values, expected, axis=1))


def test_large_index_uses_grouped_selection_and_stays_exact(x64):
    rng = np.random.default_rng(2)
    exemplars = rng.integers(-6, 7, size=(12_000, 3)).astype(np.float64)  # integer: exact, many ties
    queries = rng.integers(-6, 7, size=(5, 3)).astype(np.float64)
    expected_dist, expected_idx = ref.knn(queries, exemplars, 100)
    dist, idx = nearest_neighbours(queries, exemplars, 100)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(dist, expected_dist, atol=1e-12)


def test_ties_go_to_the_lower_index():
    exemplars = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    dist, idx = nearest_neighbours(jnp.zeros((1, 2)), exemplars, 4, block_size=2)
    assert idx.tolist() == [[0, 1, 2, 3]] and dist.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_exclude_skips_self_matches_even_with_duplicates(x64):
    exemplars = np.random.default_rng(3).normal(size=(40, 3))
    exemplars[7] = exemplars[3]  # a duplicate must still be found as a neighbour of its twin
    exclude = np.arange(40)
    expected_dist, expected_idx = ref.knn(exemplars, exemplars, 39, exclude=exclude)
    dist, idx = nearest_neighbours(
        exemplars, exemplars, 39, exclude=exclude, block_size=16, query_block_size=16
    )
    np.testing.assert_array_equal(idx, expected_idx)
    assert idx[3, 0] == 7 and idx[7, 0] == 3 and dist[3, 0] < 1e-12
    np.testing.assert_allclose(dist, expected_dist, atol=1e-12)


def test_nan_exemplar_ranks_last(points):
    queries, exemplars = points
    exemplars = exemplars.copy()
    exemplars[5] = np.nan
    _, idx = nearest_neighbours(queries, exemplars, 203)
    assert (np.asarray(idx)[:, -1] == 5).all()
    _, expected = ref.knn(queries, np.delete(exemplars, 5, axis=0), 202)
    np.testing.assert_array_equal(idx[:, :202], expected + (expected >= 5))


def test_bfloat16_distances_find_nearly_the_same_neighbours(points):
    queries, exemplars = points
    _, expected_idx = ref.knn(queries, exemplars, 1)
    _, idx = build_index(exemplars, compute_dtype=jnp.bfloat16).search(queries, 1)
    assert np.mean(np.asarray(idx) == expected_idx) > 0.9


def test_approximate_mode_returns_true_neighbours(points, index):
    queries, exemplars = points
    _, expected_idx = ref.knn(queries, exemplars, 9)
    dist, idx = index.search(queries, 9, approximate=True, recall_target=0.9)
    recall = np.mean(
        [len(np.intersect1d(a, b)) / 9 for a, b in zip(np.asarray(idx), expected_idx, strict=True)]
    )
    assert recall >= 0.9
    true_dist = ((queries[:, None, :] - exemplars[np.asarray(idx)]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, true_dist, rtol=2e-5, atol=2e-5)


def test_search_compiles_once_eagerly_and_under_jit(points, index, compile_count):
    queries, exemplars = points
    shifted = [jnp.asarray(queries + shift) for shift in (0.0, 1.0, 2.0)]
    start = compile_count()
    index.search(shifted[0], 4)  # the first calls compile
    nearest_neighbours(shifted[0], exemplars, 4)
    jitted = jax.jit(lambda q, e: nearest_neighbours(q, e, 4))
    jitted(shifted[0], exemplars)
    warm = compile_count()
    assert warm > start  # the listener sees compilations
    for q in shifted[1:]:
        index.search(q, 4)
        nearest_neighbours(q, exemplars, 4)  # builds an index eagerly every call, same shapes
        jitted(q, exemplars)
    assert compile_count() == warm


def test_no_padding_copy_of_the_exemplars(points):
    """Without a mesh the index keeps the caller's array: no pad, no copy, whatever the row count."""
    _, exemplars = points
    exemplars = jnp.asarray(exemplars)
    index = build_index(exemplars)
    assert index.vectors is exemplars and index.exemplars is exemplars
    hlo = jax.jit(lambda q: index.search(q, 5, block_size=64)).lower(exemplars[:4]).as_text()
    assert "pad" not in hlo.replace("padding", "")  # the unequal last block is sliced, not padded


@pytest.mark.parametrize("block_size, presharded", [(None, False), (8, True)])
def test_sharded_over_eight_devices(mesh, points, block_size, presharded):
    queries, exemplars = points
    if presharded:  # 200 rows split evenly: the index takes them as they are
        exemplars = jax.device_put(exemplars[:200], NamedSharding(mesh, PartitionSpec("data")))
    index = build_index(exemplars, mesh=mesh)
    if presharded:
        assert index.vectors is exemplars
    else:  # 203 rows padded once to 208, padding rows never found
        assert index.vectors.shape == (208, 6) and index.vectors.sharding.spec == PartitionSpec("data")
    expected_dist, expected_idx = ref.knn(queries, np.asarray(exemplars), 9)
    dist, idx = jax.jit(lambda q: index.search(q, 9, block_size=block_size, query_block_size=10))(queries)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(dist, expected_dist, rtol=2e-6, atol=2e-6)


def test_sharded_ties_exclusion_and_k_up_to_n(mesh):
    exemplars = np.repeat(np.arange(12, dtype=np.float32)[:, None], 2, axis=0)  # each point twice
    queries = np.array([[3.0], [10.0]], np.float32)
    index = build_index(exemplars, mesh=mesh)  # 24 rows, 3 per device; the twins sit on one device
    exclude = np.array([6, 21])
    expected_dist, expected_idx = ref.knn(queries, exemplars, 23, exclude=exclude)
    dist, idx = index.search(queries, 23, exclude=exclude)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(dist, expected_dist)


def test_queries_sharded_over_devices_and_vmap(mesh, index, points):
    queries, exemplars = points
    queries = queries[:16]
    _, expected_idx = ref.knn(queries, exemplars, 3)
    search = jax.jit(lambda q: index.search(q, 3)[1])
    np.testing.assert_array_equal(
        search(jax.device_put(queries, NamedSharding(mesh, PartitionSpec("data")))), expected_idx
    )
    per_query = jax.vmap(lambda q: index.search(q[None], 3)[1][0])(queries)
    np.testing.assert_array_equal(per_query, expected_idx)


def test_no_gradient_flows_through_the_search(index, points):
    queries, _ = points
    grad = jax.grad(lambda q: index.search(q, 3)[0].sum())(jnp.asarray(queries))
    # d/dq ||q - e||^2 = 2 (q - e): the distances are differentiable in the queries.
    _, idx = index.search(queries, 3)
    expected = 2 * (3 * queries - np.asarray(index.vectors)[np.asarray(idx)].sum(1))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-4)


def test_accurate_distances_match_float64_where_float32_cancels():
    """||q - e||^2 far below ||q||^2: the float32 expansion loses every digit, the double-float sum none."""
    rng = np.random.default_rng(4)
    queries = (1e3 + rng.normal(size=(4, 300))).astype(np.float32)
    rows = (queries[:, None, :] + rng.normal(size=(4, 5, 300)) * np.logspace(-5, 0, 5)[:, None]).astype(
        np.float32
    )
    hi, lo = jax.jit(accurate_sq_distances)(queries, rows)
    expected = ((queries[:, None, :].astype(np.float64) - rows) ** 2).sum(-1)
    got = np.asarray(hi, np.float64) + np.asarray(lo, np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_refine_restores_the_float64_order():
    """Exemplars 1e3 from the origin, 1e-2 apart: the GEMM scores ||e||^2 - 2 q.e round at ~0.06."""
    rng = np.random.default_rng(5)
    centre = np.full(8, 1e3)
    exemplars = (centre + rng.normal(size=(60, 8)) * 1e-2).astype(np.float32)
    queries = (centre + rng.normal(size=(3, 8)) * 1e-2).astype(np.float32)
    exclude = np.array([-1, 4, 59])
    expected_dist, expected_idx = ref.knn(queries, exemplars, 6, exclude=exclude)
    index = build_index(exemplars)
    _, unrefined = index.search(queries, 6, exclude=exclude, refine=0)
    assert not np.array_equal(unrefined, expected_idx)  # float32 alone gets this case wrong
    dist, idx = index.search(queries, 6, exclude=exclude, refine=59)  # window: the whole list
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-6)


def test_split_selection_over_eight_devices_with_ties(mesh):
    """9,216 integer points (ties everywhere) on 8 devices and on one: the group-minimum route
    (`_search_split`, groups of 48 rows: two-word keep masks; its exchanges on 8 devices), against
    NumPy. The first device's rows hold 100 points at distance 1 from the first query, then 200
    copies of it, all under its bound: slots for the first 2k of them in index order would keep
    only the farther ones, so every device, after the owned exchange and the one with 2k slots
    overflow, takes the exchange of all the chosen groups' entries."""
    rng = np.random.default_rng(6)
    exemplars = rng.integers(-5, 6, size=(9216, 3)).astype(np.float32)
    exemplars[100] = exemplars[5000]  # duplicates on different devices
    queries = rng.integers(-5, 6, size=(5, 3)).astype(np.float32)
    exemplars[:100] = queries[0] + np.array([1, 0, 0], np.float32)  # at distance 1, first in index order
    exemplars[952:1152] = queries[0]
    exclude = np.array([5000, -1, 3, 9215, 100])
    assert _split_group_size(1152, 8, 20 + 16) == 48 and _split_group_size(1152, 8, 36, "entries") == 16
    assert (_under_bound(queries, exemplars, exclude, 36, 48) > 72).any()  # k = 20 + refine 16
    expected_dist, expected_idx = ref.knn(queries, exemplars, 20, exclude=exclude)
    for index in (build_index(exemplars, mesh=mesh), build_index(exemplars)):  # 8 devices, then one
        dist, idx = index.search(queries, 20, exclude=exclude)
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_array_equal(dist, expected_dist)


def _under_bound(queries, exemplars, exclude, k, group):
    """Per query: the scores at or below the k-th smallest minimum of ``group``-row groups."""
    q, e = np.asarray(queries, np.float64), np.asarray(exemplars, np.float64)
    scores = (e * e).sum(1)[None, :] - 2 * q @ e.T
    scores[exclude[:, None] == np.arange(len(e))[None, :]] = np.inf
    bound = np.sort(scores.reshape(len(q), -1, group).min(2), axis=1)[:, k - 1]
    return (scores <= bound[:, None]).sum(1)


def test_split_selection_compacts_exactly(mesh):
    """Normal values, 8 devices and one: the candidates under the k-th group minimum are compacted (on
    by default only from k = 1,024) before the last sorts of the split route, and the owners send
    only the entries under each query's bound (about k of the k * 48)."""
    rng = np.random.default_rng(10)
    exemplars = rng.normal(size=(9216, 3)).astype(np.float32)
    queries = rng.normal(size=(21, 3)).astype(np.float32)
    exclude = rng.integers(-1, 9216, size=21).astype(np.int32)
    assert (_under_bound(queries, exemplars, exclude, 36, 48) <= 72).all()  # the compacted exchange
    expected_dist, expected_idx = ref.knn(queries, exemplars, 20, exclude=exclude)
    for index in (build_index(exemplars, mesh=mesh), build_index(exemplars)):  # 8 devices, then one
        dist, idx = index_module._search(
            index, jnp.asarray(queries), jnp.asarray(exclude), k=20, query_block_size=None,
            block_size=None, approximate=False, recall_target=0.95, refine=16, compact=True,
        )  # fmt: skip
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_allclose(dist, expected_dist, rtol=1e-6, atol=1e-6)


def test_split_selection_when_one_device_holds_the_neighbours():
    """2 devices, the queries' neighbours all in the first device's rows: its share of the k = 100
    chosen groups and of the entries under the bound (about -ln(1 - x) / x k = 141 at x = k g / rows
    = 0.52) overflow the 88 and 112 slots of the owned exchange (sized for rows in no particular
    order), so both devices redo it with room for all k groups and 2k = 200 entries."""
    rng = np.random.default_rng(12)
    exemplars = rng.normal(size=(9216, 3)).astype(np.float32)
    exemplars[4608:] += 10.0  # the second device's rows, far away
    queries = rng.normal(size=(6, 3)).astype(np.float32)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("rows",))
    assert _split_group_size(4608, 2, 100) == 24 and _owned_capacities(9216, 100, 24, 2) == (88, 112)
    under = _under_bound(queries, exemplars, np.full(6, -1), 100, 24)
    assert (under > 112).any() and (under <= 200).all()
    expected_dist, expected_idx = ref.knn(queries, exemplars, 100)
    for index in (build_index(exemplars, mesh=mesh), build_index(exemplars)):
        dist, idx = index.search(queries, 100, refine=0)
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_allclose(dist, expected_dist, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", [32, 80])
def test_compact_chosen_places_marked_entries_in_order(group):
    """Random keep masks of 32-row groups (one word) and 80-row groups (three): slot ``first + r``
    names the r-th marked (group, entry), as NumPy's ``nonzero`` orders them; slots before ``first``
    or past the count are invalid."""
    rng = np.random.default_rng(11)
    keep = rng.uniform(size=(6, 50, group)) < rng.uniform(0.0, 0.1, size=(6, 1, 1))
    keep[2] = True  # every entry marked: more than the slots after ``first``
    keep[3, :, 31:34] = True  # runs across the words' edges
    first = rng.integers(0, 40, size=6).astype(np.int32)
    capacity = 300
    valid, slot_group, slot_entry, count = jax.jit(compact_chosen, static_argnums=2)(
        keep_bits(jnp.asarray(keep)), jnp.asarray(first), capacity
    )
    np.testing.assert_array_equal(count, keep.sum((1, 2)))
    for b in range(6):
        groups, entries = np.nonzero(keep[b])
        slots = np.arange(capacity) - first[b]
        expected_valid = (slots >= 0) & (slots < len(groups))
        np.testing.assert_array_equal(valid[b], expected_valid)
        np.testing.assert_array_equal(
            np.asarray(slot_group[b])[expected_valid], groups[slots[expected_valid]]
        )
        np.testing.assert_array_equal(
            np.asarray(slot_entry[b])[expected_valid], entries[slots[expected_valid]]
        )


@pytest.fixture(scope="module")
def non_finite_case():
    """19 integer points (ties) with a NaN row, an infinite row and a duplicate; queries that exclude
    a row each (one a NaN query), searched for k = N - 1, which must reach the non-finite rows."""
    rng = np.random.default_rng(7)
    exemplars = rng.integers(-2, 3, size=(19, 3)).astype(np.float32)
    exemplars[3], exemplars[11], exemplars[17] = exemplars[12], np.nan, np.inf
    queries = np.concatenate([exemplars[[0, 5, 12]], [[np.nan, 0, 0], [1, 1, 0]]]).astype(np.float32)
    exclude = np.array([0, 5, 12, 2, -1])
    return queries, exemplars, exclude, ref.knn(queries, exemplars, 18, exclude=exclude)


@pytest.mark.parametrize("options", [{}, {"refine": 0}, {"block_size": 4, "query_block_size": 2}])
def test_exclude_with_k_up_to_n_minus_1_and_non_finite_rows(non_finite_case, options):
    """The excluded row ranks after the NaN and infinite rows (ties to the lower index), no NaN."""
    queries, exemplars, exclude, (expected_dist, expected_idx) = non_finite_case
    assert expected_idx[0, -2:].tolist() == [11, 17] and expected_idx[3].tolist() == [0, 1, *range(3, 19)]
    dist, idx = nearest_neighbours(queries, exemplars, 18, exclude=exclude, **options)
    np.testing.assert_array_equal(idx, expected_idx)
    assert not np.isnan(dist).any()
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-6)


def test_exclude_with_k_up_to_n_minus_1_and_non_finite_rows_on_eight_devices(non_finite_case, mesh):
    queries, exemplars, exclude, (expected_dist, expected_idx) = non_finite_case
    dist, idx = nearest_neighbours(queries, exemplars, 18, exclude=exclude, mesh=mesh)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-6)


def test_mesh_with_explicit_axes_and_queries_not_dividing_the_devices(points):
    """7 queries on 8 devices pad the query axis; the padded rows are sliced off the sharded result."""
    queries, exemplars = points
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    expected_dist, expected_idx = ref.knn(queries[:7], exemplars, 5)
    dist, idx = build_index(exemplars, mesh=mesh).search(queries[:7], 5)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(dist, expected_dist, rtol=2e-6, atol=2e-6)
