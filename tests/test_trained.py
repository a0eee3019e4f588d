"""vscjax.load and TrainedModel: parameters alone from a workdir; encode, decode, sample."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vscjax
from helpers import assert_same_leaves, assert_trees_equal, load_config, saved_state
from vscjax import bounds, checkpoints, data, train, trained
from vscjax.models import build_model
from vscjax.state import abstract, initial_state
from vscjax.workdir import read_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A 10-step tiny run with the class-mask prior on the digits."""
    path = tmp_path_factory.mktemp("trained")
    train.run(load_config("tiny", model__prior="class_mask", train__num_steps=10), str(path))
    return path


def test_load_gives_the_checkpoints_parameters_and_the_datas_shape(workdir):
    model = vscjax.load(str(workdir))
    assert model.image_shape == (8, 8, 1) and model.num_classes == 10 and model.step == 10
    assert json.load(open(workdir / "dataset.json")) == {"name": "digits", "image_shape": [8, 8, 1],
                                                          "num_classes": 10}
    assert_same_leaves(model.params, saved_state(workdir)["params"])  # read by orbax alone


def test_load_is_quiet(workdir, caplog):
    """Orbax warns that a read-only manager's folder is read only; a reader asks for that on
    purpose, so loading a model logs nothing."""
    with caplog.at_level("INFO"):
        vscjax.load(str(workdir))
    assert not [r.getMessage() for r in caplog.records if r.levelno >= 30]


def test_load_reads_no_optimizer_state(workdir, tmp_path):
    """A workdir whose optimizer no longer matches its config still loads: Adam's moments are
    never read (a full restore of the same checkpoint fails on them)."""
    copy = tmp_path / "w"
    shutil.copytree(workdir, copy)
    config = json.load(open(copy / "config.json"))
    config["optimizer"]["grad_clip_norm"] = 1.0  # optax.chain(clip, adam): another state tree
    json.dump(config, open(copy / "config.json", "w"))
    _, state, _ = initial_state(read_config(str(copy)), (8, 8, 1), 10)
    whole = checkpoints.Checkpoints.reader(str(copy))
    with pytest.raises(checkpoints.CheckpointMismatchError, match="opt_state.* is not in the checkpoint"):
        whole.restore_latest(abstract(state, jax.sharding.SingleDeviceSharding(jax.devices()[0])))
    assert_trees_equal(vscjax.load(str(copy)).params, vscjax.load(str(workdir)).params)


def test_a_workdir_without_dataset_info_needs_shape_and_classes(workdir, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(workdir, copy)
    os.remove(copy / "dataset.json")
    with pytest.raises(FileNotFoundError, match=r"no dataset.json .*image_shape=.*num_classes="):
        vscjax.load(str(copy))
    model = vscjax.load(str(copy), image_shape=(8, 8, 1), num_classes=10)
    assert_trees_equal(model.params, vscjax.load(str(workdir)).params)


def test_encode_decode_reconstruct_agree_with_the_model_in_any_batch_size(workdir):
    images = data.load("digits", "digits", "test").images[:37]  # [37, 8, 8, 1]
    model = vscjax.load(str(workdir))
    small = vscjax.load(str(workdir), batch_size=8)  # 5 batches, the last one padded
    codes, small_codes = model.encode(images), small.encode(images)
    mu, logvar, spike_logit = model.model.encode(jnp.asarray(images))
    for ours, theirs in [(codes.mu, mu), (codes.logvar, logvar), (codes.gamma, jax.nn.sigmoid(spike_logit))]:
        assert ours.shape == (37, 16)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(small_codes.mu, codes.mu, rtol=1e-5, atol=1e-6)
    recon = small.reconstruct(images)
    assert recon.shape == images.shape and recon.min() >= 0 and recon.max() <= 1
    expected = model.model.mean_image(jnp.asarray(codes.mean_code))
    np.testing.assert_allclose(recon, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"codes must be \[N, 16\]"):
        model.decode(np.zeros((2, 15)))


def test_class_masks_are_the_learned_prior(workdir):
    model = vscjax.load(str(workdir))
    prior = model.model.prior
    expected = 1 / (1 + np.exp(-(np.asarray(prior.shared[...])[None] + np.asarray(prior.offset[...]))))
    assert model.class_masks.shape == (10, 16)
    np.testing.assert_allclose(model.class_masks, expected, rtol=1e-5)


@pytest.mark.parametrize("call, words", [
    (lambda m, x: m.encode(np.full_like(x, np.nan)), "images hold 320 values that are not finite"),
    (lambda m, x: m.encode(x * 255), "images must hold values in [0, 1], the range the model was "
                                     "trained on; these span [0, 255] (divide 8-bit images by 255)"),
    (lambda m, x: m.encode(x[..., 0]), "images must be [N, 8, 8, 1], got shape (5, 8, 8)"),
    (lambda m, x: m.encode(x[:0]), "images must hold at least one row"),
    (lambda m, x: m.encode(np.array(["a"])), "images must be real numbers"),
    (lambda m, x: m.decode(np.full((2, 16), np.inf)), "codes hold 32 values that are not finite"),
    (lambda m, x: m.sample(0, jax.random.key(0)), "n must be a positive integer, got 0"),
    (lambda m, x: m.sample(2.5, jax.random.key(0)), "n must be a positive integer, got 2.5"),
    (lambda m, x: m.sample(2, jax.random.key(0), label=3.7),
     "label must be an integer class in [0, 10), got 3.7"),
    (lambda m, x: m.sample(2, jax.random.key(0), label=True), "label must be an integer class"),
    (lambda m, x: m.sample(2, jax.random.key(0), label=-1), "label must be an integer class"),
    (lambda m, x: m.sample(2, 0), "key must be one JAX random key (jax.random.key(0)), got 0"),
])
def test_a_loaded_models_methods_refuse_values_it_was_not_trained_on(workdir, call, words):
    """Each of these once gave an answer (NaN codes, codes of 0..255 images, the samples of
    class 3 for 3.7) or a message from deep inside."""
    model = vscjax.load(str(workdir))
    images = data.load("digits", "digits", "test").images[:5]  # [5, 8, 8, 1]
    with pytest.raises(ValueError) as raised:
        call(model, images)
    assert words in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(image_shape=(8, 8)), "image_shape must be three positive integers (H, W, C), got (8, 8)"),
    (dict(num_classes=0, image_shape=(8, 8, 1)), "num_classes must be a positive integer, got 0"),
])
def test_load_refuses_impossible_arguments(workdir, kwargs, words):
    with pytest.raises(ValueError) as raised:
        vscjax.load(str(workdir), **kwargs)
    assert str(raised.value) == words


# ----------------------------------------------------------------------------- sampling

N = 4000  # samples per check; a frequency's standard error is at most 0.008


def _model(prior, num_classes=3, **overrides):
    config = load_config("tiny", model__prior=prior, **overrides)
    model = build_model(config.model, (8, 8, 1), num_classes, alpha=config.objective.alpha,
                        key=jax.random.key(0))
    return model, config


def _on_fraction(z):
    return (np.asarray(z) != 0).mean(axis=0)  # [L]


def test_class_mask_samples_follow_their_classs_spike_probabilities():
    model, config = _model("class_mask")
    masks = np.full((3, 16), 0.05)
    for c in range(3):
        masks[c, 4 * c:4 * c + 4] = 0.9  # each class owns four dimensions
    model.prior.shared[...] = jnp.zeros(16)
    model.prior.offset[...] = jnp.log(masks) - jnp.log1p(-masks)
    sampler = trained.TrainedModel(model, config, num_classes=3)
    np.testing.assert_allclose(sampler.class_masks, masks, rtol=1e-5)
    for c in range(3):
        z = sampler.sample_latents(N, jax.random.key(c), label=c)
        np.testing.assert_allclose(_on_fraction(z), masks[c], atol=0.035)
        on = z[z != 0]
        assert abs(on.mean()) < 0.1 and abs(on.std() - 1) < 0.1  # the N(0, 1) slab
    z = sampler.sample_latents(N, jax.random.key(9))  # classes drawn uniformly
    np.testing.assert_allclose(_on_fraction(z), masks.mean(axis=0), atol=0.035)
    # One class per sample, not each dimension's own coin: two dimensions of one class are on
    # together far more often than dimensions of two classes.
    both_same, both_other = np.mean((z[:, 0] != 0) & (z[:, 1] != 0)), np.mean((z[:, 0] != 0) & (z[:, 4] != 0))
    assert both_same > 0.2 and both_other < 0.06
    images = sampler.sample(5, jax.random.key(1), label=2)
    np.testing.assert_allclose(images, sampler.decode(sampler.sample_latents(5, jax.random.key(1), label=2)))
    assert images.shape == (5, 8, 8, 1)
    with pytest.raises(ValueError, match=r"label must be an integer class in \[0, 3\), got 3"):
        sampler.sample(2, jax.random.key(0), label=3)


@pytest.mark.parametrize("prior", ["fixed", "pseudo_inputs", "gaussian"])
def test_other_priors_sample_their_generative_prior(prior):
    overrides = {"objective__align_mode": "off"} if prior == "gaussian" else {}
    model, config = _model(prior, **overrides)
    sampler = trained.TrainedModel(model, config, num_classes=3)
    z = sampler.sample_latents(N, jax.random.key(0))
    assert sampler.class_masks is None
    if prior == "gaussian":
        assert np.all(z != 0) and abs(z.std() - 1) < 0.05
        return
    mixture = bounds.prior_mixture(model, config.objective.alpha)
    spike = np.broadcast_to(jax.nn.sigmoid(mixture.spike_logit), (mixture.log_weights.shape[0], 16))
    np.testing.assert_allclose(_on_fraction(z), spike.mean(axis=0), atol=0.035)  # uniform mixture
    if prior == "fixed":
        np.testing.assert_allclose(spike.mean(axis=0), config.objective.alpha, rtol=1e-5)
    with pytest.raises(ValueError, match=f"the {prior} prior has no classes"):
        sampler.sample(2, jax.random.key(0), label=0)
