"""The PyTorch reference of the benchmarks computes vscjax's loss and gradients.

Same weights (copied from a vscjax MLP VSC), same images, labels and noise (eta, eps): the
JAX loss is composed from the library's pieces (encode -> sample_from_noise -> reconstruction
NLL -> spike_slab.kl -> class_alignment_loss), the torch one is benchmarks.torch_reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vscjax import alignment, spike_slab
from vscjax.models import VSC

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; the bench/test extras install it "
                    "(pip install -e '.[test]'; the CPU build is enough)")
from benchmarks import torch_reference as ref  # noqa: E402  (needs torch)

IMAGE_SHAPE, HIDDEN, LATENT, BATCH, NUM_CLASSES = (8, 8, 1), (32,), 12, 16, 4
C, ALPHA, ALIGN_WEIGHT = 20.0, 0.1, 10.0
LOSS_RTOL, GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-3, 1e-5


@pytest.fixture(scope="module")
def inputs():
    """Images [B, 8, 8, 1], labels [B] (class 3 appears once) and noise eta, eps [B, L]."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.array([0] * 5 + [1] * 6 + [2] * 4 + [3], np.int32))
    return dict(x=rng.uniform(size=(BATCH, *IMAGE_SHAPE)).astype(np.float32), labels=labels,
                eta=rng.uniform(size=(BATCH, LATENT)).astype(np.float32),
                eps=rng.standard_normal((BATCH, LATENT)).astype(np.float32))


@pytest.fixture(scope="module")
def models():
    """A vscjax MLP VSC and the torch reference holding the same weights."""
    jax_model = VSC(IMAGE_SHAPE, LATENT, hidden=HIDDEN, prior="fixed", rngs=nnx.Rngs(params=0))
    torch_model = ref.copy_weights_from_vscjax(ref.MLPVSC(IMAGE_SHAPE, LATENT, HIDDEN), jax_model)
    return jax_model, torch_model


def _jax_loss(model, x, labels, eta, eps, mode):
    mu, logvar, spike_logit = model.encode(x)
    z = spike_slab.sample_from_noise(eta, eps, mu, logvar, spike_logit, c=C, mask="relaxed")
    loss = jnp.mean(model.reconstruction_nll(z, x) + spike_slab.kl(mu, logvar, spike_logit, alpha=ALPHA))
    if mode != "off":
        align = alignment.class_alignment_loss(spike_logit, labels, NUM_CLASSES, mode=mode)
        loss = loss + ALIGN_WEIGHT * align
    return loss


def test_weights_are_copied(models):
    jax_model, torch_model = models
    pairs = list(ref.linear_arrays(torch_model, jax_model))
    assert len(pairs) == 2 * (2 * len(HIDDEN) + 2)
    for name, param, array in pairs:
        np.testing.assert_array_equal(param.detach().numpy(), array, err_msg=name)


@pytest.mark.parametrize("mode", ["off", "centroid", "pairwise"])
def test_loss_and_gradients_match(models, inputs, mode):
    jax_model, torch_model = models
    graphdef, _ = nnx.split(jax_model)
    jax_inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
    loss, grads = nnx.value_and_grad(_jax_loss)(jax_model, **jax_inputs, mode=mode)

    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    torch_model.zero_grad(set_to_none=True)
    torch_loss = ref.vsc_loss(torch_model, t["x"], t["labels"].long(), c=C, alpha=ALPHA,
                              align_mode=mode, align_weight=ALIGN_WEIGHT, num_classes=NUM_CLASSES,
                              noise=(t["eta"], t["eps"]))
    torch_loss.backward()

    np.testing.assert_allclose(torch_loss.item(), float(loss), rtol=LOSS_RTOL)
    for name, param, grad in ref.linear_arrays(torch_model, nnx.merge(graphdef, grads)):
        np.testing.assert_allclose(param.grad.numpy(), grad, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=name)


@pytest.mark.parametrize("mode", ["centroid", "pairwise"])
def test_alignment_loss_matches_in_row_blocks(inputs, mode):
    """Value and logit gradient of the alignment loss alone, torch's pairwise in 4 row blocks."""
    logits = 3.0 * np.random.default_rng(1).standard_normal((BATCH, LATENT)).astype(np.float32)
    logits[0, :3] = [30.0, -30.0, 17.0]  # saturated: gamma is exactly 0 or 1 in float32
    value, grad = jax.value_and_grad(
        lambda s: alignment.class_alignment_loss(s, jnp.asarray(inputs["labels"]), NUM_CLASSES, mode=mode)
    )(jnp.asarray(logits))

    s = torch.from_numpy(logits).requires_grad_()
    torch_value = ref.class_alignment_loss(s, torch.from_numpy(inputs["labels"]).long(), NUM_CLASSES,
                                           mode=mode, max_block_elements=4 * BATCH * LATENT)
    torch_value.backward()
    np.testing.assert_allclose(torch_value.item(), float(value), rtol=1e-5)
    np.testing.assert_allclose(s.grad.numpy(), np.asarray(grad), rtol=1e-4, atol=1e-7)
