"""alignment.py against float64 numpy references and brute-force loops over pairs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vscjax import alignment

LOG2 = np.log(2.0)


def _jsd_numpy(p_logit, q_logit):
    """Float64 JSD of Bernoullis from the definition, with 0 log 0 = 0."""
    p = 1 / (1 + np.exp(-np.asarray(p_logit, np.float64)))
    q = 1 / (1 + np.exp(-np.asarray(q_logit, np.float64)))
    return _jsd_prob(p, q)


def _entropy(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = -(p * np.log(p)) - (1 - p) * np.log(1 - p)
    return np.nan_to_num(terms)


def _jsd_prob(p, q):
    return _entropy((p + q) / 2) - _entropy(p) / 2 - _entropy(q) / 2


def _sigmoid64(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def _pairwise_numpy(logit, labels, num_classes):
    total, pairs = 0.0, 0
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            if labels[a] == labels[b] and 0 <= labels[a] < num_classes:
                total += _jsd_numpy(logit[a], logit[b]).sum()
                pairs += 1
    return total / max(pairs, 1)


def _centroid_numpy(logit, labels, num_classes):
    gamma = _sigmoid64(logit)
    total, count = 0.0, 0
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        mean = gamma[members].mean(0)
        for a in members:
            total += _jsd_prob(gamma[a], mean).sum()
            count += 1
    return total / max(count, 1)


def _batch(seed, batch, latent, num_classes, scale=3.0):
    rng = np.random.default_rng(seed)
    logit = (rng.normal(0, scale, (batch, latent))).astype(np.float32)
    labels = rng.integers(0, num_classes, batch).astype(np.int32)
    return logit, labels


# ----------------------------------------------------------------------------- JSD


def test_jsd_equals_float64_reference_including_saturated_logits():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.normal(0, 4, 500), [-50, 50, -50, 50, 17, -17, 0]]).astype(np.float32)
    q = np.concatenate([rng.normal(0, 4, 500), [50, -50, -50, 50, 17, 20, 0]]).astype(np.float32)
    np.testing.assert_allclose(alignment.bernoulli_jsd(p, q), _jsd_numpy(p, q), rtol=1e-4, atol=1e-6)


def test_jsd_is_symmetric_bounded_and_zero_iff_equal():
    rng = np.random.default_rng(1)
    p = rng.normal(0, 5, 1000).astype(np.float32)
    q = rng.normal(0, 5, 1000).astype(np.float32)
    pq, qp = alignment.bernoulli_jsd(p, q), alignment.bernoulli_jsd(q, p)
    np.testing.assert_array_equal(pq, qp)
    assert np.all((pq >= 0) & (pq <= LOG2))
    np.testing.assert_allclose(alignment.bernoulli_jsd(p, p), 0.0, atol=1e-6)
    distinct = np.abs(_sigmoid64(p) - _sigmoid64(q)) > 1e-2
    assert np.all(np.asarray(pq)[distinct] > 0)
    # Opposite certainties are the maximum, log 2.
    np.testing.assert_allclose(alignment.bernoulli_jsd(jnp.float32(-60), jnp.float32(60)), LOG2, rtol=1e-6)


def test_jsd_gradient_finite_at_saturation():
    logits = jnp.array([-50.0, 50.0, 17.0, -17.0, 0.0, 30.0])
    for other in (logits, -logits, jnp.zeros(6)):
        g = jax.grad(lambda p, q=other: alignment.bernoulli_jsd(p, q).sum())(logits)
        assert np.all(np.isfinite(g))


# ----------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("mode", alignment.MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_equals_brute_force(mode, seed):
    num_classes = 7  # with 24 samples some classes are absent or single
    logit, labels = _batch(seed, 24, 13, num_classes)
    reference = {"pairwise": _pairwise_numpy, "centroid": _centroid_numpy}[mode]
    got = alignment.class_alignment_loss(logit, labels, num_classes, mode=mode)
    np.testing.assert_allclose(got, reference(logit, labels, num_classes), rtol=1e-4)


@pytest.mark.parametrize("max_block_elements", [1, 13 * 24 * 2, 13 * 24 * 5, 10**9])
def test_pairwise_block_size_does_not_change_the_value(max_block_elements):
    logit, labels = _batch(3, 24, 13, 4)
    got = alignment.class_alignment_loss(
        logit, labels, 4, mode="pairwise", max_block_elements=max_block_elements
    )
    np.testing.assert_allclose(got, _pairwise_numpy(logit, labels, 4), rtol=1e-4)


@pytest.mark.parametrize("mode", alignment.MODES)
def test_no_pairs_gives_zero_and_finite_gradient(mode):
    logit, _ = _batch(4, 5, 6, 5)
    labels = np.arange(5, dtype=np.int32)  # every class once
    value, grad = jax.value_and_grad(
        lambda s: alignment.class_alignment_loss(s, labels, 8, mode=mode)
    )(logit)
    assert value == 0.0
    assert np.all(grad == 0.0)


@pytest.mark.parametrize("mode", alignment.MODES)
def test_saturated_logits_give_finite_values_and_gradients(mode):
    """Class means of gamma exactly 0 or 1 in float32 (sigmoid(17) == 1) must not give NaN."""
    logit = jnp.array([[-50.0, 50.0, 30.0, -30.0], [-50.0, 50.0, -30.0, 30.0], [-60.0, 60.0, 0.0, 0.0]])
    labels = jnp.array([0, 0, 1], jnp.int32)
    value, grad = jax.value_and_grad(
        lambda s: alignment.class_alignment_loss(s, labels, 2, mode=mode)
    )(logit)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(
        value, {"pairwise": _pairwise_numpy, "centroid": _centroid_numpy}[mode](np.asarray(logit), np.asarray(labels), 2), rtol=1e-4
    )


@pytest.mark.parametrize("mode", alignment.MODES)
def test_gradient_matches_finite_differences(mode):
    logit, labels = _batch(5, 12, 5, 3, scale=1.0)
    f = lambda s: alignment.class_alignment_loss(s, labels, 3, mode=mode)  # noqa: E731
    grad = np.asarray(jax.grad(f)(logit))
    direction = np.random.default_rng(0).normal(size=logit.shape).astype(np.float32)
    h = 1e-2
    numeric = (f(logit + h * direction) - f(logit - h * direction)) / (2 * h)
    np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=2e-2)


@pytest.mark.parametrize("mode", alignment.MODES)
def test_out_of_range_labels_raise_eagerly_and_are_masked_under_jit(mode):
    logit, labels = _batch(6, 16, 8, 3)
    bad = labels.copy()
    bad[[2, 9]] = [3, -1]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        alignment.class_alignment_loss(logit, bad, 3, mode=mode)
    jitted = jax.jit(lambda s, y: alignment.class_alignment_loss(s, y, 3, mode=mode))
    keep = np.setdiff1d(np.arange(16), [2, 9])
    np.testing.assert_allclose(
        jitted(logit, bad), alignment.class_alignment_loss(logit[keep], labels[keep], 3, mode=mode), rtol=1e-5
    )


def test_shape_and_mode_errors_name_the_problem():
    logit, labels = _batch(7, 8, 4, 2)
    with pytest.raises(ValueError, match=r"spike_logit \(8, 4\) and labels \(7,\)"):
        alignment.class_alignment_loss(logit, labels[:7], 2)
    with pytest.raises(ValueError, match="unknown alignment mode 'pairs'"):
        alignment.class_alignment_loss(logit, labels, 2, mode="pairs")
    with pytest.raises(ValueError, match="labels must be integers"):
        alignment.class_alignment_loss(logit, labels.astype(np.float32), 2)


@pytest.mark.parametrize("mode", alignment.MODES)
def test_jitted_loss_compiles_once(mode):
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def loss(s, y):
        return alignment.class_alignment_loss(s, y, 4, mode=mode)

    for seed in range(3):
        logit, labels = _batch(seed, 16, 8, 4)
        reference = {"pairwise": _pairwise_numpy, "centroid": _centroid_numpy}[mode]
        np.testing.assert_allclose(loss(logit, labels), reference(logit, labels, 4), rtol=1e-4)


def _pairwise_grad_temp_bytes(batch, latent):
    logit = jax.ShapeDtypeStruct((batch, latent), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    grad = jax.jit(
        jax.grad(
            lambda s, y: alignment.class_alignment_loss(
                s, y, 10, mode="pairwise", max_block_elements=2**18
            )
        )
    )
    return grad.lower(logit, labels).compile().memory_analysis().temp_size_in_bytes


def test_pairwise_memory_grows_as_b_times_l_not_b_b_l():
    """Compiled temp memory of the pairwise gradient is O(B*L): doubling B about doubles it."""
    latent = 1024
    small, large = _pairwise_grad_temp_bytes(256, latent), _pairwise_grad_temp_bytes(512, latent)
    assert large < 2.5 * small, (small, large)
    # One [B, B, L] float32 array at B=512 would be 1 GiB; we stay under 1/10 of it.
    assert large < 512 * 512 * latent * 4 / 10, large


# ----------------------------------------------------------------------------- class-major blocks


def _class_major_batch(seed, num_classes, per_class, latent):
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 3, (num_classes * per_class, latent)).astype(np.float32)
    return logit, np.repeat(np.arange(num_classes), per_class).astype(np.int32)


@pytest.mark.parametrize("max_block_elements", [1, 5 * 4 * 4 * 3, 10**9])
@pytest.mark.parametrize("per_class", [1, 2, 4])
def test_class_major_pairwise_equals_brute_force(max_block_elements, per_class):
    logit, labels = _class_major_batch(per_class, 5, per_class, 11)
    got = alignment.class_alignment_loss(logit, labels, 5, mode="pairwise", class_major=True,
                                         max_block_elements=max_block_elements)
    np.testing.assert_allclose(got, _pairwise_numpy(logit, labels, 5), rtol=1e-4, atol=1e-7)


def test_class_major_gradient_equals_general_path():
    logit, labels = _class_major_batch(0, 4, 3, 9)
    grad = lambda **kw: jax.grad(lambda s: alignment.class_alignment_loss(s, labels, 4, mode="pairwise", **kw))(logit)  # noqa: E731
    np.testing.assert_allclose(grad(class_major=True, max_block_elements=20), grad(), rtol=1e-5, atol=1e-8)


def test_class_major_masks_invalid_labels_under_jit_and_rejects_other_layouts_eagerly():
    logit, labels = _class_major_batch(1, 3, 4, 6)
    with pytest.raises(ValueError, match="class-major order"):
        alignment.class_alignment_loss(logit, labels[::-1].copy(), 3, mode="pairwise", class_major=True)
    with pytest.raises(ValueError, match="divisible by the 3 classes"):
        alignment.class_alignment_loss(logit[:11], labels[:11], 3, mode="pairwise", class_major=True)
    bad = labels.copy()
    bad[4:8] = 7  # class 1's block is out of range: an empty class under jit
    jitted = jax.jit(lambda s, y: alignment.class_alignment_loss(s, y, 3, mode="pairwise", class_major=True))
    keep = np.r_[0:4, 8:12]
    np.testing.assert_allclose(jitted(logit, bad), _pairwise_numpy(logit[keep], labels[keep], 3), rtol=1e-4)


def test_class_major_sharded_equals_single_device():
    from vscjax import sharding

    logit, labels = _class_major_batch(2, 4, 8, 10)
    f = jax.jit(jax.value_and_grad(lambda s, y: alignment.class_alignment_loss(
        s, y, 4, mode="pairwise", class_major=True, max_block_elements=500)))
    value, grad = f(logit, labels)
    for explicit in (False, True):
        mesh = sharding.make_data_mesh(explicit=explicit)
        v8, g8 = f(*sharding.shard_batch((logit, labels), mesh))
        np.testing.assert_allclose(v8, value, rtol=1e-5)
        np.testing.assert_allclose(g8, grad, rtol=1e-5, atol=1e-9)


def _dense_pairwise(logit, labels, num_classes):
    """Autodiff reference: every pair built densely from bernoulli_jsd ([B, B, L])."""
    jsd = jnp.sum(alignment.bernoulli_jsd(logit[:, None, :], logit[None, :, :]), axis=-1)  # [B, B]
    valid = (labels >= 0) & (labels < num_classes)
    pair = (labels[:, None] == labels[None, :]) & valid[:, None] & jnp.triu(jnp.ones(jsd.shape, bool), k=1)
    return jnp.sum(jnp.where(pair, jsd, 0.0)) / jnp.maximum(jnp.sum(pair), 1)


@pytest.mark.parametrize("class_major", [False, True])
@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_pairwise_one_pass_gradient_equals_autodiff_of_dense_reference(class_major, scale):
    """The pairwise loss computes its gradient in the forward pass (custom VJP): check it."""
    rng = np.random.default_rng(int(scale))
    logit = (rng.normal(0, scale, (20, 9))).astype(np.float32)
    logit[0, :3] = [40.0, -40.0, 17.0]  # saturated spikes
    labels = np.repeat(np.arange(4), 5).astype(np.int32) if class_major else rng.integers(0, 4, 20).astype(np.int32)
    ours = jax.grad(lambda s: alignment.class_alignment_loss(
        s, labels, 4, mode="pairwise", class_major=class_major, max_block_elements=200))(logit)
    reference = jax.grad(lambda s: _dense_pairwise(s, jnp.asarray(labels), 4))(logit)
    np.testing.assert_allclose(ours, reference, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("mode", alignment.MODES)
def test_reduce_dims_mean_is_the_sum_over_dimensions_divided_by_l(mode):
    """A weight keeps its meaning as L changes: the same per-dimension disagreement tiled to
    4x the dimensions gives 4x the summed loss and the same mean."""
    rng = np.random.default_rng(21)
    logits = jnp.asarray(rng.normal(0, 2, (12, 5)), jnp.float32)
    labels = jnp.asarray(np.arange(12) % 3, jnp.int32)
    loss = lambda s, reduce: alignment.class_alignment_loss(s, labels, 3, mode=mode, reduce_dims=reduce)  # noqa: E731
    wide = jnp.tile(logits, (1, 4))  # [B, 4L]
    np.testing.assert_allclose(loss(logits, "mean"), loss(logits, "sum") / 5, rtol=1e-6)
    np.testing.assert_allclose(loss(wide, "sum"), 4 * loss(logits, "sum"), rtol=1e-5)
    np.testing.assert_allclose(loss(wide, "mean"), loss(logits, "mean"), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown reduce_dims 'max'"):
        loss(logits, "max")
