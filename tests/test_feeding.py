"""Device-resident data and K steps per call: exact against host feeding and one step per call."""

import functools
import json
import logging
import os
import signal

import chex
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from helpers import assert_trees_equal, load_config
from vscjax import data, feeding, resident, sharding, train, train_step
from vscjax.checkpoints import Checkpoints


def _final_state(workdir, config):
    trainer = train.Trainer(config)
    checkpoints = Checkpoints(workdir, config)
    try:
        return jax.device_get(checkpoints.restore_latest(trainer.abstract_state()))
    finally:
        checkpoints.close()


def _train_records(workdir):
    """The train records of metrics.jsonl without the timing, by step."""
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: {k: v for k, v in r.items() if k != "samples_per_second"}
            for r in records if r.get("split") == "train"}


def _call_ends(train_config, start=0):
    """Steps at which the loop's calls end, from ``start`` to num_steps."""
    ends, step = [], start
    while step < train_config.num_steps:
        step += train.call_length(step, train_config)
        ends.append(step)
    return ends


# ----------------------------------------------------------------------------- encoding


def test_encode_pixels_is_exact_for_8bit_sets_and_digits(mnist_dir):
    mnist = data.load_idx(mnist_dir, "test")
    digits = data.load("digits", "digits", "train")
    for dataset, num_levels in ((mnist, 256), (digits, 17)):
        codes, levels = resident.encode_pixels(dataset.images)
        assert codes.dtype == np.uint8 and codes.shape == dataset.images.shape
        assert levels.dtype == np.float32 and len(levels) == num_levels
        np.testing.assert_array_equal(levels[codes].view(np.uint32), dataset.images.view(np.uint32))


@pytest.mark.parametrize("case", ["257 values", "negative zero"])
def test_encode_pixels_keeps_float32_when_codes_cannot_be_exact(case):
    if case == "257 values":
        images = (np.arange(257, dtype=np.float32) / 256).reshape(257, 1, 1, 1)
    else:  # -0.0 == 0.0: one code for both would turn -0.0 into +0.0
        images = np.array([0.0, -0.0, 0.5], np.float32).reshape(3, 1, 1, 1)
    codes, levels = resident.encode_pixels(images)
    assert levels is None and codes is images


def test_encode_pixels_keeps_float32_for_a_negative_zero():
    """-0.0 would come back +0.0 from the masked sum of the "compare" decode."""
    codes, levels = resident.encode_pixels(np.array([[-0.0, 0.5]], np.float32))
    assert levels is None and codes.dtype == np.float32


def test_encode_pixels_keeps_a_nan_pixel():
    """A broken pixel must reach the step as it is (the non-finite policy sees it)."""
    images = np.array([0.0, np.nan, 1.0, 3e38], np.float32).reshape(4, 1, 1, 1)
    codes, levels = resident.encode_pixels(images)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(levels[codes].view(np.uint32), images.view(np.uint32))


@pytest.mark.parametrize("encoded, decode", [(True, "table"), (True, "compare"), (False, "table")])
def test_gather_batch_equals_the_host_batch(mnist_dir, encoded, decode):
    dataset = data.load_idx(mnist_dir, "test")
    codes, levels = resident.encode_pixels(dataset.images) if encoded else (dataset.images, None)
    mesh = sharding.make_data_mesh()
    placed = resident.place(codes, levels, dataset.labels, sharding.replicated(mesh))
    assert placed.images.dtype == (np.uint8 if encoded else np.float32)
    idx = np.random.default_rng(0).permutation(len(dataset.labels))[:64].astype(np.int32)
    idx_on_mesh = jax.device_put(idx, sharding.batch_sharding(mesh))
    batch = jax.jit(functools.partial(resident.gather_batch, decode=decode))(placed, idx_on_mesh)
    assert batch["image"].sharding.is_equivalent_to(sharding.batch_sharding(mesh), 4)
    np.testing.assert_array_equal(np.asarray(batch["image"]).view(np.uint32),
                                  dataset.images[idx].view(np.uint32))
    np.testing.assert_array_equal(np.asarray(batch["label"]), dataset.labels[idx])


# ----------------------------------------------------------------------------- feeds


def test_make_feed_places_on_devices_within_budget_else_feeds_from_host(caplog):
    trainer = train.Trainer(load_config("tiny"))
    d = trainer.config.data

    def feed_with(**changes):
        config = d.copy_and_resolve_references()
        config.update(changes)
        return feeding.make_feed(config, trainer.train_data, trainer.sampler(), trainer.mesh, 0)

    device = feed_with()
    assert isinstance(device, feeding.DeviceFeed) and device.resident.images.dtype == np.uint8
    indices = device.inputs(5, 3)  # [K, B]: the sampler's, split over the devices like a batch
    np.testing.assert_array_equal(np.asarray(indices), [trainer.sampler().indices(s) for s in (5, 6, 7)])
    assert indices.sharding.is_equivalent_to(NamedSharding(trainer.mesh, PartitionSpec(None, "data")), 2)
    with caplog.at_level(logging.WARNING):
        over = feed_with(device_budget_mib=0)
    assert isinstance(over, feeding.HostFeed)
    assert any("data.device_budget_mib=0: feeding batches from the host" in r.getMessage()
               for r in caplog.records)
    host = feed_with(placement="host")
    assert isinstance(host, feeding.HostFeed) and host.resident is None
    batches = host.inputs(0, 2)
    np.testing.assert_array_equal(np.asarray(batches[1]["label"]),
                                  trainer.train_data.labels[trainer.sampler().indices(1)])
    for feed in (over, host):
        feed.close()


# ----------------------------------------------------------------------------- the loop


def test_call_length_lands_on_every_checkpoint_evaluation_and_the_end():
    config = load_config("tiny", train__steps_per_call=4, train__checkpoint_every=10,
                         train__eval_every=15, train__num_steps=37)
    t = config.train
    ends = _call_ends(t)
    lengths = np.diff([0, *ends])
    assert set(lengths) == {1, 4}  # two compiled call lengths, no more
    for boundary in (10, 20, 30, 15, 30, 37):
        assert boundary in ends
    assert ends[-1] == 37
    assert _call_ends(load_config("tiny", train__num_steps=37).train) == list(range(1, 38))


@pytest.mark.parametrize("placement, steps_per_call", [("device", 1), ("device", 4), ("host", 4)])
def test_feeds_and_steps_per_call_train_bit_identical_runs(tmp_path, placement, steps_per_call):
    """Host feeding one step per call is the reference; checkpoints fall inside K-step calls."""
    reference = load_config("tiny", train__num_steps=30, data__placement="host")
    config = load_config("tiny", train__num_steps=30, data__placement=placement,
                         train__steps_per_call=steps_per_call)
    train.run(reference, str(tmp_path / "reference"))
    summary = train.run(config, str(tmp_path / "run"))
    assert summary["step"] == 30
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["10", "20", "30"]
    assert_trees_equal(_final_state(tmp_path / "reference", reference),
                       _final_state(tmp_path / "run", config))
    # Every logged step shows the values of one step per call.
    assert _train_records(tmp_path / "run") == _train_records(tmp_path / "reference")


def test_multi_step_compiles_once_per_call_length():
    chex.clear_trace_counter()
    config = load_config("tiny", train__steps_per_call=4, train__num_steps=30)
    trainer = train.Trainer(config)
    step_fn = chex.assert_max_traces(
        train_step.make_train_step(trainer.graphdef, trainer.tx, config.objective, trainer.num_classes), n=2)
    steps = jax.jit(train_step.make_multi_step(step_fn), donate_argnums=0)
    feed = trainer.feed(0)
    state, step = trainer.initial_state, 0
    for end in _call_ends(config.train):  # calls of 4 and of 1 step
        state, metrics = steps(state, feed.inputs(step, end - step), feed.resident, trainer.key)
        assert metrics["loss"].shape == (end - step,)
        step = end
    assert int(state.step) == 30


def test_sigterm_inside_a_call_saves_its_last_step_then_resumes_bit_identical(tmp_path, monkeypatch):
    """The signal arrives while step 20's record is written (the call of updates 21..24 runs
    meanwhile)."""
    config = load_config("tiny", train__steps_per_call=4, train__num_steps=40,
                         train__checkpoint_every=20, train__log_every=2)
    write = train.MetricsLog.write

    def write_then_signal(self, split, step, metrics):
        write(self, split, step, metrics)
        if split == "train" and step == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train.MetricsLog, "write", write_then_signal)
    interrupted = train.run(config, str(tmp_path / "run"))
    monkeypatch.setattr(train.MetricsLog, "write", write)
    # Reported one call late: step 20's record is written once the call of updates 21..24 is
    # dispatched; the loop stops before the next call and saves step 24.
    assert interrupted == {"interrupted_at_step": 24, "resumed_from": None}
    assert 24 in _call_ends(config.train)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["20", "24"]
    assert max(_train_records(tmp_path / "run")) == 24  # every logged step of the calls run
    summary = train.run(config, str(tmp_path / "run"))
    assert summary["step"] == 40
    reference = load_config("tiny", train__num_steps=40, train__checkpoint_every=20,
                            train__log_every=2, data__placement="host")
    train.run(reference, str(tmp_path / "reference"))
    assert_trees_equal(_final_state(tmp_path / "reference", reference),
                       _final_state(tmp_path / "run", config))
    assert _train_records(tmp_path / "run") == _train_records(tmp_path / "reference")
