import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxdl.nn.sdm.neighbours import nearest_neighbours
from tests.reference import sdm as ref


@pytest.fixture
def points(rng):
    return rng.normal(size=(29, 6)).astype(np.float32), rng.normal(size=(203, 6)).astype(np.float32)


@pytest.mark.parametrize("block_size, query_block_size", [(None, None), (32, None), (50, 8), (7, 29)])
def test_matches_brute_force(points, block_size, query_block_size):
    queries, exemplars = points
    expected_dist, expected_idx = ref.knn(queries, exemplars, 9)
    with jax.default_matmul_precision("highest"):
        dist, idx = nearest_neighbours(
            queries, exemplars, 9, block_size=block_size, query_block_size=query_block_size
        )
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-5, atol=1e-5)


def test_exclude_skips_self_matches_even_with_duplicates(x64, rng):
    exemplars = rng.normal(size=(40, 3))
    exemplars[7] = exemplars[3]  # a duplicate must still be found as a neighbour of its twin
    exclude = np.arange(40)
    expected_dist, expected_idx = ref.knn(exemplars, exemplars, 5, exclude=exclude)
    dist, idx = nearest_neighbours(
        exemplars, exemplars, 5, exclude=exclude, block_size=16, query_block_size=16
    )
    np.testing.assert_array_equal(idx, expected_idx)
    assert idx[3, 0] == 7 and idx[7, 0] == 3 and dist[3, 0] < 1e-12
    np.testing.assert_allclose(dist, expected_dist, atol=1e-12)


def test_bfloat16_distances_find_nearly_the_same_neighbours(points):
    queries, exemplars = points
    _, expected_idx = ref.knn(queries, exemplars, 1)
    _, idx = nearest_neighbours(queries, exemplars, 1, compute_dtype=jnp.bfloat16)
    assert np.mean(np.asarray(idx) == expected_idx) > 0.9


@pytest.mark.parametrize("block_size, presharded", [(None, False), (8, True)])
def test_sharded_over_eight_devices(mesh, points, block_size, presharded):
    queries, exemplars = points
    if presharded:  # 200 rows split evenly; otherwise 203 rows are padded inside
        exemplars = jax.device_put(exemplars[:200], NamedSharding(mesh, PartitionSpec("data")))
    expected_dist, expected_idx = ref.knn(queries, np.asarray(exemplars), 9)

    @jax.jit
    def search(q, e):
        return nearest_neighbours(q, e, 9, block_size=block_size, query_block_size=10, mesh=mesh)

    with jax.default_matmul_precision("highest"):
        dist, idx = search(queries, exemplars)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-5, atol=1e-5)


def test_queries_sharded_over_devices_and_vmap(mesh, rng):
    queries = rng.normal(size=(16, 4)).astype(np.float32)
    exemplars = rng.normal(size=(50, 4)).astype(np.float32)
    _, expected_idx = ref.knn(queries, exemplars, 3)
    with jax.default_matmul_precision("highest"):
        search = jax.jit(lambda q: nearest_neighbours(q, exemplars, 3)[1])
        np.testing.assert_array_equal(
            search(jax.device_put(queries, NamedSharding(mesh, PartitionSpec("data")))), expected_idx
        )
        per_query = jax.vmap(lambda q: nearest_neighbours(q[None], exemplars, 3)[1][0])(queries)
    np.testing.assert_array_equal(per_query, expected_idx)


def test_bad_inputs(points, mesh):
    queries, exemplars = points
    with pytest.raises(ValueError, match="k must be an int in"):
        nearest_neighbours(queries, exemplars, 204)
    with pytest.raises(ValueError, match="k must be an int in"):
        nearest_neighbours(exemplars, exemplars, 203, exclude=np.arange(203))
    with pytest.raises(ValueError, match="exemplars must have shape"):
        nearest_neighbours(queries, exemplars[:, :3], 2)
    with pytest.raises(ValueError, match="block_size"):
        nearest_neighbours(queries, exemplars, 2, block_size=0)
    with pytest.raises(ValueError, match="exclude must have shape"):
        nearest_neighbours(queries, exemplars, 2, exclude=np.arange(3))
    with pytest.raises(ValueError, match="axis_name"):
        nearest_neighbours(queries, exemplars, 2, mesh=mesh, axis_name="model")
