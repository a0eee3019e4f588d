"""Batch-sharded losses over 8 (fake CPU) devices equal the single-device result."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vscjax import alignment, sharding, spike_slab


def _batch(seed, batch=64, latent=24, num_classes=5):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(0, 3, (batch, latent)).astype(np.float32),
        rng.integers(0, num_classes, batch).astype(np.int32),
    )


def _meshes():
    return {
        "ours_auto": sharding.make_data_mesh(),
        "ours_explicit": sharding.make_data_mesh(explicit=True),
        # A user's own mesh: jax.make_mesh's default axis type is Explicit in JAX 0.10.
        "make_mesh_default": jax.make_mesh((8,), ("data",)),
    }


def test_eight_fake_devices_are_present():
    assert jax.device_count() == 8


@pytest.mark.parametrize("mesh_name", list(_meshes()))
@pytest.mark.parametrize("mode", alignment.MODES)
def test_sharded_alignment_equals_single_device(mesh_name, mode):
    mesh = _meshes()[mesh_name]
    logit, labels = _batch(0)
    loss = lambda s, y: alignment.class_alignment_loss(s, y, 5, mode=mode, max_block_elements=4096)  # noqa: E731
    value_grad = jax.jit(jax.value_and_grad(loss))
    single_value, single_grad = value_grad(logit, labels)
    s, y = sharding.shard_batch((logit, labels), mesh)
    assert len(s.sharding.device_set) == 8
    value, grad = value_grad(s, y)
    np.testing.assert_allclose(value, single_value, rtol=1e-5)
    np.testing.assert_allclose(grad, single_grad, rtol=1e-5, atol=1e-9)
    # The statistics are global: per-device losses averaged would differ.
    per_device = np.mean([loss(logit[i::8], labels[i::8]) for i in range(8)])
    assert abs(per_device - single_value) > 1e-3


def test_naive_outer_comparison_fails_on_explicit_mesh():
    """The trap the alignment code avoids: an outer == of two batch-sharded vectors."""
    mesh = jax.make_mesh((8,), ("data",))
    labels = jax.device_put(np.arange(16, dtype=np.int32), NamedSharding(mesh, PartitionSpec("data")))
    with pytest.raises(Exception, match="illegally sharded"):
        jax.jit(lambda y: y[:, None] == y[None, :])(labels)


@pytest.mark.parametrize("mesh_name", list(_meshes()))
def test_sharded_kl_equals_single_device(mesh_name):
    mesh = _meshes()[mesh_name]
    rng = np.random.default_rng(1)
    mu, logvar, logit = (rng.normal(size=(64, 24)).astype(np.float32) for _ in range(3))
    f = jax.jit(lambda *a: spike_slab.kl(*a, alpha=0.05).mean())
    np.testing.assert_allclose(f(*sharding.shard_batch((mu, logvar, logit), mesh)), f(mu, logvar, logit), rtol=1e-5)


def test_batch_that_does_not_split_is_named():
    mesh = sharding.make_data_mesh()
    with pytest.raises(ValueError, match="batch size 12 does not split over 8 devices"):
        sharding.shard_batch(np.zeros((12, 3), np.float32), mesh)
