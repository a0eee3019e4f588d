"""The training loss as assembled, against a float64 NumPy reference (tests/numpy_reference.py).

Every term of the objective carries a weight away from 1 at the step tested (beta 0.6,
warm-up 0.5, alignment weight 2, sparsity weight 0.7, class-prior penalty 0.3, c 3), so a
term dropped, a weight ignored or a schedule misread changes the loss; the gradient the jitted
train step applies (SGD with learning rate 1: the update is minus the gradient) is compared
with float64 central differences of the reference, leaf by leaf.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import numpy_reference as ref
from vscjax import objective, train_step
from vscjax.config import base_config, schedule
from vscjax.models import VSC
from vscjax.state import TrainState

STEP = 5  # every schedule below is half-way at step 5
SCHEDULED = dict(c=3.0, beta=0.6, warmup=0.5, align_weight=2.0)  # their values there, by hand
NUM_CLASSES, LATENT, BATCH = 3, 6, 12

CASES = {
    # The class-mask prior: own-class spike KL, sparsity, offset penalty; centroid alignment.
    "class_mask": dict(prior="class_mask", likelihood="bernoulli", mask="straight_through",
                       align_mode="centroid", align_reduce_dims="mean", class_major=False),
    # The fixed prior, relaxed spikes, pairwise alignment on a class-major batch.
    "fixed": dict(prior="fixed", likelihood="bernoulli", mask="relaxed", align_mode="pairwise",
                  align_reduce_dims="sum", class_major=True),
    # The pseudo-input prior (selector-weighted KL, its sparsity term), Gaussian likelihood.
    "pseudo_inputs": dict(prior="pseudo_inputs", likelihood="gaussian", mask="straight_through",
                          align_mode="pairwise", align_reduce_dims="sum", class_major=False),
}


def _objective(case):
    config = base_config().objective
    config.alpha = 0.2
    config.mask = case["mask"]
    config.c = schedule("linear", 5.0, start=1.0, begin_step=0, end_step=10)
    config.beta = schedule("linear", 1.0, start=0.2, begin_step=0, end_step=10)
    config.warmup = schedule("linear", 1.0, start=0.0, begin_step=0, end_step=10)
    config.align_weight = schedule("linear", 4.0, start=0.0, begin_step=0, end_step=10)
    config.align_mode = case["align_mode"]
    config.align_reduce_dims = case["align_reduce_dims"]
    config.sparsity_weight = 0.7
    config.class_prior_penalty = 0.3
    return config


def _setup(name):
    """(case, objective config, model, batch as numpy) of one case."""
    case = CASES[name]
    model = VSC((8, 8, 1), LATENT, hidden=(8,), likelihood=case["likelihood"], prior=case["prior"],
                num_classes=NUM_CLASSES, num_pseudo_inputs=3, pseudo_sharpness=10.0, alpha=0.2,
                rngs=nnx.Rngs(params=0))
    rng = np.random.default_rng(1)
    kernel = np.array(model.encoder.heads.kernel[...])
    kernel[:, 2] *= 8.0  # [in, head, L]: spike logits that differ between samples: alignment matters
    model.encoder.heads.kernel[...] = jnp.asarray(kernel)
    if case["prior"] == "class_mask":  # classes apart, offsets away from 0
        model.prior.shared[...] = jnp.asarray(rng.normal(-1, 1, LATENT), jnp.float32)
        model.prior.offset[...] = jnp.asarray(rng.normal(0, 1, (NUM_CLASSES, LATENT)), jnp.float32)
    labels = np.repeat(np.arange(NUM_CLASSES), BATCH // NUM_CLASSES)
    if not case["class_major"]:
        labels = rng.permutation(labels)
    images = rng.random((BATCH, 8, 8, 1)).astype(np.float32)
    return case, _objective(case), model, images, labels.astype(np.int32)


def _noise(key):
    """The sample's noise (eta, eps) from a step key, drawn as the model draws it."""
    key_eta, key_eps = jax.random.split(key)
    shape = (BATCH, LATENT)
    return (np.asarray(jax.random.uniform(key_eta, shape), np.float64),
            np.asarray(jax.random.normal(key_eps, shape), np.float64))


def _reference(case, params, images, labels, eta, eps, **kw):
    return ref.training_loss(params, images, labels, eta, eps, prior=case["prior"],
                             likelihood=case["likelihood"], alpha=0.2, mask=case["mask"],
                             sparsity_weight=0.7, class_prior_penalty=0.3,
                             align_mode=case["align_mode"], align_reduce_dims=case["align_reduce_dims"],
                             **SCHEDULED, **kw)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_and_metrics_equal_the_float64_reference(name):
    case, config, model, images, labels = _setup(name)
    key = jax.random.key(7)
    batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
    loss, metrics = objective.loss_and_metrics(model, batch, key, STEP, config, NUM_CLASSES,
                                               class_major=case["class_major"])
    expected, parts = _reference(case, ref.params_of(model), images, labels, *_noise(key))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    for part, value in parts.items():
        np.testing.assert_allclose(metrics[part], value, rtol=1e-4, atol=1e-6, err_msg=part)
    for part, value in SCHEDULED.items():
        np.testing.assert_allclose(metrics[part], value, rtol=1e-6, err_msg=part)
    # Each weighted term moves the loss by far more than the tolerance: none can hide.
    assert min(parts["kl"] * 0.4, parts["align"] * 2.0) > 1e-3 * abs(expected)
    if case["prior"] != "fixed":
        assert parts["sparsity"] * 0.7 > 1e-3 * abs(expected)
    if case["prior"] == "class_mask":
        assert parts["class_prior_penalty"] * 0.3 > 1e-3 * abs(expected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_step_applies_the_gradient_of_the_float64_reference(name):
    """SGD with learning rate 1 through the jitted train step: parameters before minus after
    is the gradient it applied. Compared with central differences of the float64 reference
    along random directions of every parameter array (straight-through: the hard-minus-relaxed
    offset held at its value at these parameters, which is what straight-through means)."""
    case, config, model, images, labels = _setup(name)
    graphdef, params = nnx.split(model)
    tx = optax.sgd(1.0)
    step = jax.jit(train_step.make_train_step(graphdef, tx, config, NUM_CLASSES, class_major=case["class_major"]))
    state = TrainState(params=params, opt_state=tx.init(params), step=jnp.int32(STEP),
                       nonfinite_steps=jnp.int32(0))
    key = jax.random.key(3)
    new_state, metrics = step(state, {"image": jnp.asarray(images), "label": jnp.asarray(labels)}, key)
    before, after = ref.params_of(params), ref.params_of(new_state.params)
    applied = {name: before[name] - after[name] for name in before}

    eta, eps = _noise(jax.random.fold_in(key, STEP))  # the step's noise
    mu, logvar, spike_logit = ref.encode(before, images)
    offset = (ref.spike_mask(spike_logit, eta, SCHEDULED["c"], "hard")
              - ref.spike_mask(spike_logit, eta, SCHEDULED["c"], "relaxed"))
    loss = lambda p: _reference(case, p, images, labels, eta, eps, mask_offset=offset)[0]  # noqa: E731
    np.testing.assert_allclose(metrics["loss"], loss(before), rtol=1e-5)
    rng, h = np.random.default_rng(0), 1e-6
    for leaf, value in before.items():
        for _ in range(2):
            v = rng.normal(size=value.shape)
            v /= np.linalg.norm(v)
            up, down = dict(before), dict(before)
            up[leaf], down[leaf] = value + h * v, value - h * v
            numeric = (loss(up) - loss(down)) / (2 * h)
            applied_along_v = np.sum(applied[leaf] * v)
            scale = np.linalg.norm(applied[leaf]) + 1e-3
            assert abs(applied_along_v - numeric) <= 2e-3 * abs(numeric) + 1e-4 * scale, \
                (leaf, applied_along_v, numeric)
