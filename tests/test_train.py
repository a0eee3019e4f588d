"""End-to-end training: real steps on every data source, exact resume, sharding, bad inputs."""

import json
import logging
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import vscjax
from helpers import assert_trees_equal, check_record, load_config, saved_state
from vscjax import data, sharding, train, train_step
from vscjax.config import ConfigError, validate
from vscjax.state import TrainState


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
    # Default options train on hard spikes (straight-through): the relaxed sample was never
    # trained, so neither its ELBO nor the leak is recorded, printed or plotted.
    assert "leak" not in summary and "relaxed_neg_elbo" not in summary
    assert "relaxed -ELBO and leak n/a" in train.summarise(summary)
    for name in ("config.json", "dataset.json", "metrics.jsonl", "summary.json",
                 "plots/reconstructions.png", "plots/prior_samples.png", "plots/training_curves.png",
                 "checkpoints/40"):
        assert os.path.exists(tmp_path / name), name
    assert os.listdir(tmp_path / "tensorboard")
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert records[0] == {"event": "start", "step": 0, "resumed_from": None}
    train_records = [r for r in records if r.get("split") == "train"]
    assert [r["step"] for r in train_records] == [1, 10, 20, 30, 40]
    assert {"loss", "recon", "kl", "align", "mean_gamma", "expected_active", "nonfinite"} <= set(train_records[0])
    validation_record = [r for r in records if r.get("split") == "validation"][-1]
    assert validation_record["step"] == 40  # the step of the last train record and checkpoint
    assert "exact_neg_elbo" in validation_record
    assert "leak" not in validation_record and "relaxed_neg_elbo" not in validation_record
    check_record(json.load(open(tmp_path / "summary.json"))["provenance"])


def test_relaxed_training_reports_its_leak_and_prints_it(tmp_path):
    """A model trained on the relaxed sample can hide information in closed spikes: its summary
    and validation records carry the leak, exact minus relaxed -ELBO; the printed summary too."""
    config = load_config("tiny", train__num_steps=12, objective__mask="relaxed")
    summary = train.run(config, str(tmp_path))
    assert summary["leak"] == pytest.approx(summary["exact_neg_elbo"] - summary["relaxed_neg_elbo"],
                                            abs=1e-3)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert "leak" in [r for r in records if r.get("split") == "validation"][-1]
    assert f"(leak {summary['leak']:.2f})" in train.summarise(summary)


def test_train_and_validation_records_of_one_step_describe_one_state(tmp_path):
    """Step k is the state after k updates, in train records, validation records and checkpoint
    names alike: evaluating checkpoint k gives validation record k, and train record k is the
    loss of update k, on the parameters of step k - 1."""
    config = load_config("tiny", train__num_steps=20, train__eval_every=10)
    train.run(config, str(tmp_path))
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    validation = {r["step"]: r for r in records if r.get("split") == "validation"}
    train_records = {r["step"]: r for r in records if r.get("split") == "train"}
    assert sorted(validation) == sorted(set(train_records) - {1}) == [10, 20]
    trainer = train.Trainer(config)
    for step in (10, 20):
        with ocp.StandardCheckpointer() as checkpointer:
            state = checkpointer.restore(tmp_path / "checkpoints" / str(step) / "default",
                                         trainer.abstract_state())
        assert trainer.evaluate(state)["exact_neg_elbo"] == validation[step]["exact_neg_elbo"]
    # Train record 10 is the loss of the update from step 9's parameters: re-run it from step 0.
    state = trainer.initial_state
    sampler = trainer.sampler()
    for index in range(10):
        idx = sampler.indices(index)
        batch = sharding.shard_batch({"image": trainer.train_data.images[idx],
                                      "label": trainer.train_data.labels[idx]}, trainer.mesh)
        state, metrics = trainer.train_step(state, batch, trainer.key)
    assert float(metrics["loss"]) == train_records[10]["loss"]


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


@pytest.mark.parametrize("overrides", [
    dict(model__likelihood="gaussian"),
    dict(model__dtype="bfloat16"),
], ids=["gaussian", "bfloat16"])
def test_other_models_train_with_finite_gradients(tmp_path, overrides):
    """The Gaussian likelihood and bf16 compute, in the real loop: no update skipped, every
    logged gradient norm finite, the loss going down (the conv model: on the shapes, below)."""
    config = load_config("tiny", train__num_steps=30, train__log_every=2, **overrides)
    summary = train.run(config, str(tmp_path))
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    logged = [r for r in records if r.get("split") == "train"]
    assert summary["nonfinite_steps"] == 0 and all(r["nonfinite"] == 0 for r in logged)
    assert all(np.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in logged)
    losses = [r["loss"] for r in logged]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.02 * abs(np.mean(losses[:3])), losses
    assert np.isfinite(summary["exact_neg_elbo"])


def test_conv_trains_end_to_end_on_shapes(tmp_path):
    """The conv architecture on its smallest image size, through the real trainer on a small
    shapes grid: the loss falls, nothing is skipped, and the checkpoint reloads: vscjax.load
    gives its parameters, whose validation -ELBO is the run's, and encodes new images."""
    config = load_config("tiny", data__source="shapes", data__name="shapes-4",
                         model__architecture="conv", model__conv_channels=8, train__num_steps=40,
                         train__log_every=2, train__batch_size=40, data__balanced=True)
    summary = train.run(config, str(tmp_path))
    logged = [r for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r.get("split") == "train"]
    losses = [r["loss"] for r in logged]
    assert summary["nonfinite_steps"] == 0 and all(r["nonfinite"] == 0 for r in logged)
    assert all(np.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in logged)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    model = vscjax.load(str(tmp_path))
    assert (model.image_shape, model.num_classes, model.step) == ((32, 32, 1), 5, 40)
    trainer = train.Trainer(config)
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(tmp_path / "checkpoints" / "40" / "default", trainer.abstract_state())
    assert_trees_equal(model.params, state.params)
    assert trainer.evaluate(state)["exact_neg_elbo"] == pytest.approx(summary["exact_neg_elbo"], rel=1e-6)
    codes = model.encode(data.load("shapes", "shapes-4", "test").images)
    assert codes.gamma.shape == (round(5 * 4**4 / 6), 16) and np.all(np.isfinite(codes.mu))


def test_resumed_run_is_bit_identical(tmp_path):
    config = load_config("tiny", train__num_steps=30)
    assert train.run(config, str(tmp_path / "straight"))["resumed_from"] is None
    first = load_config("tiny", train__num_steps=20)
    train.run(first, str(tmp_path / "resumed"))  # stops at 20 with a checkpoint there
    summary = train.run(config, str(tmp_path / "resumed"))  # resumes at 20, runs to 30
    assert summary["step"] == 30 and summary["resumed_from"] == 20
    # Parameters, optimizer state and step alike.
    assert_trees_equal(saved_state(tmp_path / "straight"), saved_state(tmp_path / "resumed"))


def test_a_rerun_past_its_steps_and_a_schedule_past_the_run_are_named(tmp_path, caplog):
    """A rerun asking for fewer steps than the newest checkpoint trains nothing, evaluates that
    checkpoint and says so; a schedule ending after the run says where it stops."""
    train.run(load_config("tiny", train__num_steps=20), str(tmp_path))
    shorter = load_config("tiny", train__num_steps=10, objective__beta__kind="linear",
                          objective__beta__start=0.0, objective__beta__end_step=40)
    with caplog.at_level("WARNING"):
        summary = train.run(shorter, str(tmp_path))
    assert summary["step"] == summary["resumed_from"] == 20
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert (f"the newest checkpoint in {tmp_path} is step 20, past train.num_steps=10: nothing to "
            "train, step 20 is evaluated (another --workdir trains 10 steps afresh)") in warnings
    # beta rises linearly from 0 to 1 over 40 steps: 10 / 40 of the way at step 10.
    assert ("objective.beta ends at step 40, after train.num_steps=10: it stops at 0.25 instead of 1 "
            "(--config.objective.beta.end_step=10 ends it with this run)") in warnings


def test_resume_that_changes_a_cosine_schedule_is_refused(tmp_path):
    cosine = dict(optimizer__lr_schedule="cosine", train__num_steps=10)
    train.run(load_config("tiny", **cosine), str(tmp_path))
    with pytest.raises(ConfigError, match="train.num_steps: the checkpoint in this workdir was made "
                                          r"with 10, this run asks for 20 \(the cosine"):
        train.run(load_config("tiny", **{**cosine, "train__num_steps": 20}), str(tmp_path))
    summary = train.run(load_config("tiny", **cosine), str(tmp_path))  # the same value: resumes
    assert summary["resumed_from"] == 10


def _one_step(mesh, config, batch):
    """(gradient, metrics) of one update on ``mesh``: SGD with learning rate 1, so parameters
    before minus after is the gradient itself (after an Adam step an element whose gradient is
    rounding noise moves by a whole learning rate either way)."""
    trainer = train.Trainer(config, mesh)
    tx = optax.sgd(1.0)
    params = trainer.initial_state.params
    state = TrainState(params=params, opt_state=tx.init(params), step=jnp.int32(0),
                       nonfinite_steps=jnp.int32(0))
    step = jax.jit(train_step.make_train_step(trainer.graphdef, tx, config.objective, trainer.num_classes))
    new_state, metrics = step(state, sharding.shard_batch(batch, mesh), trainer.key)
    return jax.device_get(jax.tree.map(jnp.subtract, params, new_state.params)), jax.device_get(metrics)


@pytest.mark.parametrize("align_mode", ["centroid", "pairwise"])
def test_eight_device_step_equals_one_device_step(align_mode):
    config = load_config("tiny", objective__align_mode=align_mode)
    trainer = train.Trainer(config)
    batch = {"image": trainer.train_data.images[:32], "label": trainer.train_data.labels[:32]}
    grads1, metrics1 = _one_step(sharding.make_data_mesh(jax.devices()[:1]), config, batch)
    grads8, metrics8 = _one_step(sharding.make_data_mesh(), config, batch)
    np.testing.assert_allclose(metrics8["loss"], metrics1["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics8["align"], metrics1["align"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads8)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.max(np.abs(a)))


def test_train_step_compiles_once():
    chex.clear_trace_counter()
    config = load_config("tiny")
    trainer = train.Trainer(config)
    step_fn = chex.assert_max_traces(
        train_step.make_train_step(trainer.graphdef, trainer.tx, config.objective, trainer.num_classes), n=1)
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


def test_both_ways_of_withholding_an_update_give_the_same_steps():
    """"cond" (CPUs) and "select" (TPUs): bit-identical after a finite step, and neither moves a
    parameter on a non-finite one."""
    config = load_config("tiny")
    trainer = train.Trainer(config)
    images = trainer.train_data.images[:32].copy()
    labels = trainer.train_data.labels[:32]
    results = {}
    for skip in train_step.SKIPS:
        step = jax.jit(train_step.make_train_step(trainer.graphdef, trainer.tx, config.objective,
                                                  trainer.num_classes, skip=skip))
        batch = sharding.shard_batch({"image": images, "label": labels}, trainer.mesh)
        state, _ = step(trainer.initial_state, batch, trainer.key)
        bad = images.copy()
        bad[0, 0, 0, 0] = np.nan
        skipped, metrics = step(state, sharding.shard_batch({"image": bad, "label": labels}, trainer.mesh),
                                trainer.key)
        assert int(metrics["nonfinite"]) == 1
        assert_trees_equal(jax.device_get(state.params), jax.device_get(skipped.params))
        results[skip] = jax.device_get(state)
    assert_trees_equal(results["cond"], results["select"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(model__latent_dim=0), "model.latent_dim: must be a positive integer"),
        (dict(objective__alpha=1.5), r"objective.alpha: must lie in \(0, 1\)"),
        (dict(objective__alpha=0.0), r"objective.alpha: must lie in \(0, 1\)"),
        (dict(train__batch_size=12), "train.batch_size: 12 does not split over 8 devices"),
        (dict(objective__mask="soft"), "objective.mask: must be one of .* got 'soft'"),
        (dict(model__prior="gaussian"), "objective.align_mode: the alignment loss needs spikes"),
        (dict(train__steps_per_call=0), "train.steps_per_call: must be a positive integer, got 0"),
        (dict(data__placement="gpu"), "data.placement: must be one of .* got 'gpu'"),
        (dict(data__device_budget_mib=-1), "data.device_budget_mib: must be a finite number >= 0"),
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


def test_balanced_batches_the_labels_cannot_give_are_refused_before_anything_is_written(tmp_path):
    """data.balanced with a batch of 32 over 10 classes: refused before the workdir gets a
    checkpoint folder, a config or a metrics log. It used to fail at the first batch, after
    a resumed run had already rewritten its metrics.jsonl (found by tests/test_fuzz.py)."""
    workdir = tmp_path / "w"
    with pytest.raises(data.DataError, match="balanced batches need batch_size"):
        train.run(load_config("tiny", data__balanced=True, train__batch_size=32), str(workdir))
    assert os.listdir(workdir) == ["train.lock"]
