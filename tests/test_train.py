"""End-to-end training: real steps on every data source, exact resume, sharding, bad inputs."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO_ROOT, assert_trees_equal, load_config
from vscjax import sharding, train
from vscjax.checkpoints import Checkpoints
from vscjax.config import ConfigError, validate


def _final_state(workdir, config):
    trainer = train.Trainer(config)
    checkpoints = Checkpoints(workdir, config)
    try:
        return checkpoints.restore_latest(trainer.abstract_state())
    finally:
        checkpoints.close()


def _train_and_compare(config, workdir):
    """Train in workdir; return (untrained exact -ELBO, summary)."""
    before = train.Trainer(config)
    untrained = before.evaluate(before.initial_state)["exact_neg_elbo"]
    summary = train.run(config, str(workdir))
    return untrained, summary


def test_digits_run_writes_outputs_and_learns(tmp_path):
    config = load_config("tiny", train__plots=True)
    untrained, summary = _train_and_compare(config, tmp_path)
    assert summary["step"] == 40 and np.isfinite(summary["exact_neg_elbo"])
    assert summary["exact_neg_elbo"] < untrained - 5
    # Default options (straight-through spikes) keep the leak small (bound stated in README).
    assert abs(summary["leak"]) < 2.0, summary["leak"]
    for name in ("config.json", "metrics.jsonl", "summary.json", "plots/reconstructions.png",
                 "plots/training_curves.png", "checkpoints/40"):
        assert os.path.exists(tmp_path / name), name
    assert os.listdir(tmp_path / "tensorboard")
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [0, 10, 20, 30, 39]
    assert {"loss", "recon", "kl", "align", "mean_gamma", "expected_active", "nonfinite"} <= set(train_records[0])
    validation_record = [r for r in records if r["split"] == "validation"][-1]
    assert {"exact_neg_elbo", "relaxed_neg_elbo", "leak"} <= set(validation_record)


def test_idx_mnist_run_learns(tmp_path, mnist_dir):
    config = load_config("tiny", data__source="idx", data__name="mnist", data__dir=mnist_dir,
                         train__eval_batch_size=1000, train__num_steps=30)
    untrained, summary = _train_and_compare(config, tmp_path)
    assert summary["exact_neg_elbo"] < untrained - 20


def test_tfds_mock_run_learns(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    config = load_config("tiny", data__source="tfds", data__name="mnist", train__eval_batch_size=64,
                         train__num_steps=20)
    with tfds.testing.mock_data(num_examples=128):  # random pixels: little to learn
        untrained, summary = _train_and_compare(config, tmp_path)
    assert summary["exact_neg_elbo"] < untrained - 5


@pytest.mark.parametrize("prior", ["class_mask", "pseudo_inputs", "gaussian"])
def test_other_priors_train(tmp_path, prior):
    overrides = dict(model__prior=prior)
    if prior == "gaussian":
        overrides["objective__align_mode"] = "off"
    config = load_config("tiny", **overrides)
    untrained, summary = _train_and_compare(config, tmp_path)
    assert summary["exact_neg_elbo"] < untrained - 5


def test_resumed_run_is_bit_identical(tmp_path):
    config = load_config("tiny", train__num_steps=30)
    train.run(config, str(tmp_path / "straight"))
    first = load_config("tiny", train__num_steps=20)
    train.run(first, str(tmp_path / "resumed"))  # stops at 20 with a checkpoint there
    summary = train.run(config, str(tmp_path / "resumed"))  # resumes at 20, runs to 30
    assert summary["step"] == 30
    assert_trees_equal(_final_state(tmp_path / "straight", config), _final_state(tmp_path / "resumed", config))


def _one_step(mesh, config, batch):
    trainer = train.Trainer(config, mesh)
    state, metrics = trainer.train_step(trainer.initial_state, sharding.shard_batch(batch, mesh), trainer.key)
    return jax.device_get(state.params), jax.device_get(metrics)


@pytest.mark.parametrize("align_mode", ["centroid", "pairwise"])
def test_eight_device_step_equals_one_device_step(align_mode):
    config = load_config("tiny", objective__align_mode=align_mode)
    trainer = train.Trainer(config)
    batch = {"image": trainer.train_data.images[:32], "label": trainer.train_data.labels[:32]}
    params1, metrics1 = _one_step(sharding.make_data_mesh(jax.devices()[:1]), config, batch)
    params8, metrics8 = _one_step(sharding.make_data_mesh(), config, batch)
    np.testing.assert_allclose(metrics8["loss"], metrics1["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics8["align"], metrics1["align"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params8)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_train_step_compiles_once():
    chex.clear_trace_counter()
    config = load_config("tiny")
    trainer = train.Trainer(config)
    step_fn = chex.assert_max_traces(
        train.make_train_step(trainer.graphdef, trainer.tx, config.objective, trainer.num_classes), n=1)
    jitted = jax.jit(step_fn, donate_argnums=0)
    state = trainer.initial_state
    sampler = trainer.sampler()
    mesh = trainer.mesh
    for step in range(3):
        idx = sampler.indices(step)
        batch = sharding.shard_batch({"image": trainer.train_data.images[idx], "label": trainer.train_data.labels[idx]}, mesh)
        state, _ = jitted(state, batch, trainer.key)
    assert int(state.step) == 3


def test_nonfinite_step_is_skipped():
    config = load_config("tiny")
    trainer = train.Trainer(config)
    images = trainer.train_data.images[:32].copy()
    images[0, 0, 0, 0] = np.nan
    batch = sharding.shard_batch({"image": images, "label": trainer.train_data.labels[:32]}, trainer.mesh)
    before = jax.device_get(trainer.initial_state.params)
    state, metrics = trainer.train_step(trainer.initial_state, batch, trainer.key)
    assert int(metrics["nonfinite"]) == 1 and int(state.nonfinite_steps) == 1 and int(state.step) == 1
    assert_trees_equal(before, jax.device_get(state.params))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(model__latent_dim=0), "model.latent_dim: must be a positive integer"),
        (dict(objective__alpha=1.5), r"objective.alpha: must lie in \(0, 1\)"),
        (dict(objective__alpha=0.0), r"objective.alpha: must lie in \(0, 1\)"),
        (dict(train__batch_size=12), "train.batch_size: 12 does not split over 8 devices"),
        (dict(objective__mask="soft"), "objective.mask: 'soft' is not one of"),
        (dict(model__prior="gaussian"), "objective.align_mode: the alignment loss needs spikes"),
        (dict(train__steps_per_call=0), "train.steps_per_call: must be a positive integer, got 0"),
        (dict(data__placement="gpu"), "data.placement: 'gpu' is not one of"),
        (dict(data__device_budget_mib=-1), "data.device_budget_mib: must be >= 0"),
    ],
)
def test_impossible_config_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config("tiny", **overrides), num_devices=8)


def test_batch_larger_than_data_is_named():
    with pytest.raises(ValueError, match="train.batch_size: 2048 is larger than the 1317"):
        train.Trainer(load_config("tiny", train__batch_size=2048))


def test_images_of_wrong_shape_are_named():
    trainer = train.Trainer(load_config("tiny"))
    with pytest.raises(ValueError, match=r"images of shape \(8, 8, 1\), got \(28, 28, 1\)"):
        trainer.model(trainer.initial_state).encode(jnp.zeros((2, 28, 28, 1)))
    with pytest.raises(ValueError, match="float images in \\[0, 1\\], got dtype uint8"):
        trainer.model(trainer.initial_state).encode(jnp.zeros((2, 8, 8, 1), jnp.uint8))


def test_resume_with_different_latent_dim_is_refused(tmp_path):
    train.run(load_config("tiny", train__num_steps=10), str(tmp_path))
    with pytest.raises(ConfigError, match="model.latent_dim: the checkpoint in this workdir was made with 16"):
        train.run(load_config("tiny", model__latent_dim=32), str(tmp_path))


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "train.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


@pytest.mark.parametrize("override, message", [
    ("--config.train.num_stepz=3", "num_stepz"),
    ("--config.train.steps_per_call=-2",
     "train.py: config key train.steps_per_call: must be a positive integer"),
])
def test_cli_rejects_a_bad_config_key(tmp_path, override, message):
    result = _cli("--config", os.path.join(REPO_ROOT, "configs", "tiny.py"), override,
                  "--workdir", str(tmp_path))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_trains_tiny_config(tmp_path):
    result = _cli("--config", os.path.join(REPO_ROOT, "configs", "tiny.py"),
                  "--config.train.num_steps=12", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation exact -ELBO" in result.stdout and "leak" in result.stdout
    assert json.load(open(tmp_path / "summary.json"))["step"] == 12


def test_balanced_batches_use_the_class_block_pairwise_path():
    """With class-balanced batches the class-major alignment equals the general one."""
    config = load_config("tiny", data__balanced=True, train__batch_size=40, objective__align_mode="pairwise")
    balanced = train.Trainer(config)
    general = train.Trainer(load_config("tiny", train__batch_size=40, objective__align_mode="pairwise"))
    idx = balanced.sampler().indices(0)
    labels = balanced.train_data.labels[idx]
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 4))
    batch = sharding.shard_batch({"image": balanced.train_data.images[idx], "label": labels}, balanced.mesh)
    _, m_balanced = balanced.train_step(balanced.initial_state, batch, balanced.key)
    _, m_general = general.train_step(general.initial_state, batch, general.key)
    np.testing.assert_allclose(m_balanced["align"], m_general["align"], rtol=1e-5)
