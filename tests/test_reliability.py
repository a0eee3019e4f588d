"""Reliability: faults injected at named moments, SIGTERM, corrupt and mismatched checkpoints,
non-finite losses, determinism.

The fault tests run ``train.py`` in a subprocess that ``VSCJAX_FAULT`` (vscjax/faults.py) kills
at a named moment, check on disk that the kill landed there, rerun the same command, and
compare with an uninterrupted run: the step the rerun resumed from, the whole train state
(parameters, optimizer state, step) bit for bit, and the metrics log record for record.
"""

import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO_ROOT, assert_trees_equal, committed_steps, load_config, saved_state
from vscjax import checkpoints, data, faults, objective, train
from vscjax.checkpoints import CheckpointMismatchError, Checkpoints
from vscjax.workdir import CORRUPT_DIR

TINY = os.path.join(REPO_ROOT, "configs", "tiny.py")
# Checkpoints at 20, 40 and 60; train records at 1, 10, 20, ..., 60.
RUN_ARGS = ["--config.train.num_steps=60", "--config.train.checkpoint_every=20",
            "--config.train.log_every=10"]


def _train_cli(workdir, *extra, fault=None):
    """``python train.py`` on one device (as a user runs it), with ``VSCJAX_FAULT=fault``."""
    env = {key: value for key, value in os.environ.items() if key != faults.ENV}
    env["XLA_FLAGS"] = ""
    if fault:
        env[faults.ENV] = fault
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "train.py"), "--config", TINY,
                           *RUN_ARGS, *extra, "--workdir", str(workdir)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def _finish(workdir, *extra):
    result = _train_cli(workdir, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The workdir of the run every interrupted one must reproduce."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    _finish(workdir)
    return workdir


def _records(workdir) -> list[dict]:
    """Every record of metrics.jsonl (a cut line fails to parse)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _metrics(records, split) -> list[dict]:
    """The records of ``split``, without the timing that differs between runs."""
    return [{k: v for k, v in r.items() if k != "samples_per_second"} for r in records
            if r.get("split") == split]


def _starts(records) -> list[tuple]:
    return [(r["step"], r["resumed_from"]) for r in records if r.get("event") == "start"]


def _assert_reproduces(workdir, reference, starts):
    """``workdir`` finished as ``reference`` did, after runs that started at ``starts``."""
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    expected = json.load(open(os.path.join(reference, "summary.json")))
    assert summary["resumed_from"] == starts[-1][1]
    assert {**summary, "resumed_from": None} == expected
    assert_trees_equal(saved_state(workdir), saved_state(reference))
    records = _records(workdir)
    assert _starts(records) == starts
    assert _metrics(records, "train") == _metrics(_records(reference), "train")
    assert _metrics(records, "validation")[-1:] == _metrics(_records(reference), "validation")
    assert not os.path.exists(os.path.join(workdir, CORRUPT_DIR))


# ----------------------------------------------------------------------------- SIGKILL


def _nothing_saved(workdir):
    assert committed_steps(workdir) == [] and not os.listdir(os.path.join(workdir, "checkpoints"))
    assert _records(workdir) == [{"event": "start", "step": 0, "resumed_from": None}]


def _written_not_committed(workdir):
    assert committed_steps(workdir) == [20]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "40.orbax-checkpoint-tmp"))


def _committed_not_sealed(workdir):
    assert committed_steps(workdir) == [20, 40]
    assert os.path.exists(os.path.join(workdir, "checkpoints", "20", checkpoints.CHECKSUMS_FILE))
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "40", checkpoints.CHECKSUMS_FILE))


def _record_cut(workdir):
    *whole, cut = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
    with pytest.raises(ValueError):
        json.loads(cut)
    assert cut.startswith('{"split": "train", "step": 50')
    assert json.loads(whole[-1])["step"] == 40


def _record_whole(workdir):
    last = _records(workdir)[-1]
    assert (last["split"], last["step"]) == ("train", 50)
    assert 60 not in committed_steps(workdir)


@pytest.mark.parametrize("fault, landed", [
    ("step@1", _nothing_saved),  # the first update
    ("checkpoint_commit@40", _written_not_committed),  # during orbax's write, before its rename
    ("checkpoint_manifest@40", _committed_not_sealed),  # after the commit, before checksums.json
    ("metrics_append@50", _record_cut),  # half of a metrics.jsonl line written
    ("logged@50", _record_whole),  # at a log step, its record written whole
])
def test_sigkill_at_a_named_moment_then_rerun_reproduces_the_run(tmp_path, uninterrupted, fault, landed):
    workdir = tmp_path / "run"
    killed = _train_cli(workdir, fault=fault)
    assert killed.returncode == -9, killed.stderr[-3000:]
    landed(workdir)
    resume = committed_steps(workdir)[-1] if committed_steps(workdir) else None
    # Where a kill lands after the save of step 40, the one of step 20 is committed: the save
    # of 40 waited for it.
    assert resume == {"step@1": None, "checkpoint_commit@40": 20}.get(fault, resume)
    assert fault == "step@1" or resume >= 20
    _finish(workdir)
    _assert_reproduces(workdir, uninterrupted, [(0, None), (resume or 0, resume)])
    assert not glob.glob(str(workdir / "checkpoints" / "*tmp*"))  # orbax's leftovers removed
    for step in committed_steps(workdir):  # every checkpoint sealed, the resumed one included
        assert checkpoints.verify_checksums(str(workdir / "checkpoints" / str(step))) is None
        assert os.path.exists(workdir / "checkpoints" / str(step) / checkpoints.CHECKSUMS_FILE)


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_during_startup_saves_nothing_new_then_resumes(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    _finish(workdir, "--config.train.num_steps=20")  # a shorter run (constant learning rate)
    stopped = _train_cli(workdir, fault="startup:TERM")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "interrupted at step 20" in stopped.stdout
    assert committed_steps(workdir) == [20]
    _finish(workdir)
    _assert_reproduces(workdir, uninterrupted, [(0, None), (20, 20), (20, 20)])


def test_sigterm_during_final_evaluation_keeps_the_final_state_then_evaluates(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    stopped = _train_cli(workdir, fault="final_evaluation:TERM")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "interrupted at step 60" in stopped.stdout
    assert not os.path.exists(workdir / "summary.json")
    assert checkpoints.verify_checksums(str(workdir / "checkpoints" / "60")) is None
    assert os.path.exists(workdir / "checkpoints" / "60" / checkpoints.CHECKSUMS_FILE)
    assert _metrics(_records(workdir), "validation") == []
    _finish(workdir)  # trains nothing, evaluates
    _assert_reproduces(workdir, uninterrupted, [(0, None), (60, 60)])
    before = _records(workdir)
    _finish(workdir)  # a finished workdir: a start record, no second final record
    assert _records(workdir) == before + [{"event": "start", "step": 60, "resumed_from": 60}]


# ----------------------------------------------------------------------------- corrupt checkpoints


@pytest.mark.parametrize("damage", ["garble", "truncate", "delete"])
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, caplog, damage):
    config30 = load_config("tiny", train__num_steps=30)
    train.run(config30, str(tmp_path / "run"))
    files = [f for f in glob.glob(str(tmp_path / "run" / "checkpoints" / "30" / "**" / "*"), recursive=True)
             if os.path.isfile(f) and "checksums" not in f]
    victim = max(files, key=os.path.getsize)  # the array data
    if damage == "garble":
        with open(victim, "r+b") as f:
            f.seek(os.path.getsize(victim) // 2)
            f.write(b"\x13\x37" * 8)
    elif damage == "truncate":
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 3)
    else:
        os.remove(victim)
    good_before = sorted(os.listdir(tmp_path / "run" / "checkpoints" / "20"))
    config40 = load_config("tiny", train__num_steps=40)
    with caplog.at_level("WARNING"):
        summary = train.run(config40, str(tmp_path / "run"))
    assert summary["step"] == 40 and summary["resumed_from"] == 20
    assert any("checkpoints/30 is corrupt" in r.getMessage() for r in caplog.records)
    assert os.path.isdir(tmp_path / "run" / "corrupt_checkpoints" / "30")
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints" / "20")) == good_before
    train.run(config40, str(tmp_path / "straight"))
    assert_trees_equal(saved_state(tmp_path / "run"), saved_state(tmp_path / "straight"))


def test_unsealed_checkpoint_that_orbax_cannot_read_is_quarantined(tmp_path):
    """Without checksums (a kill before them), an unreadable file still marks the checkpoint
    corrupt: orbax's failure to read it, not a checksum, quarantines it."""
    config = load_config("tiny", train__num_steps=20)
    train.run(config, str(tmp_path))
    os.remove(tmp_path / "checkpoints" / "20" / checkpoints.CHECKSUMS_FILE)
    for path in glob.glob(str(tmp_path / "checkpoints" / "20" / "default" / "**" / "d" / "*"), recursive=True):
        open(path, "wb").close()  # the array data, emptied
    trainer = train.Trainer(config)
    store = Checkpoints(str(tmp_path), config)
    try:
        state = store.restore_latest(trainer.abstract_state())
    finally:
        store.close()
    assert int(state.step) == 10
    assert os.path.isdir(tmp_path / "corrupt_checkpoints" / "20")


# ----------------------------------------------------------------------------- mismatched checkpoints


def _restore(workdir, config, abstract_state):
    store = Checkpoints(str(workdir), config)
    try:
        return store.restore_latest(abstract_state)
    finally:
        store.close()


@pytest.mark.parametrize("change, message", [
    # The same tree, another shape (the model was changed since the checkpoint).
    (dict(model__latent_dim=8), r"params/decoder/layers/0/kernel/value has shape \(16, 32\) in the "
                                r"checkpoint, \(8, 32\) in this run"),
    # Another tree: a prior with parameters of its own.
    (dict(model__prior="class_mask"), r"params/prior/offset/value is not in the checkpoint"),
])
def test_checkpoint_of_another_state_stops_and_stays(tmp_path, change, message):
    config = load_config("tiny", train__num_steps=10)
    train.run(config, str(tmp_path))
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    other = train.Trainer(load_config("tiny", **change))
    with pytest.raises(CheckpointMismatchError, match=f"checkpoints/10 does not fit .*{message}") as err:
        _restore(tmp_path, config, other.abstract_state())
    assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
    assert not os.path.exists(tmp_path / CORRUPT_DIR)


def test_checkpoint_of_another_dtype_stops_and_stays(tmp_path):
    """orbax would cast the arrays to the asked dtype: the metadata check refuses instead."""
    config = load_config("tiny", train__num_steps=10)
    train.run(config, str(tmp_path))
    trainer = train.Trainer(config)
    def as_bf16(x):
        dtype = jax.numpy.bfloat16 if x.dtype == np.float32 else x.dtype
        return jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)

    wanted = jax.tree.map(as_bf16, trainer.abstract_state())
    with pytest.raises(CheckpointMismatchError, match=r"dtype float32 in the checkpoint, bfloat16 in this run"):
        _restore(tmp_path, config, wanted)
    assert committed_steps(tmp_path) == [10] and not os.path.exists(tmp_path / CORRUPT_DIR)


def test_cli_names_a_checkpoint_of_another_shape(tmp_path):
    """With config.json gone, nothing but the checkpoint itself says the model was different."""
    _finish(tmp_path, "--config.train.num_steps=20")
    os.remove(tmp_path / "config.json")
    result = _train_cli(tmp_path, "--config.model.hidden=(64,)")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "checkpoints/20 does not fit the train state of this run" in result.stderr
    assert "params/decoder/layers/0/bias/value has shape (32,) in the checkpoint, (64,) in this run" in result.stderr
    assert "Traceback" not in result.stderr
    assert committed_steps(tmp_path) == [20] and not os.path.exists(tmp_path / "config.json")


# ----------------------------------------------------------------------------- non-finite losses


def _digits_with_overflow_at(step, config):
    """Digits whose batch of update ``step`` (only) holds a pixel of 3e38: the loss overflows."""
    real = data.load("digits", "digits", "train")
    sampler = data.BatchSampler(real.labels, config.train.batch_size, seed=config.seed,
                                num_classes=real.num_classes)
    earlier = set(np.concatenate([sampler.indices(s) for s in range(step - 1)]).tolist())
    victim = next(i for i in sampler.indices(step - 1) if i not in earlier)
    images = real.images.copy()
    images[victim, 3, 3, 0] = 3e38
    return data.Dataset(images, real.labels, real.num_classes, "digits-overflow")


@pytest.mark.parametrize("steps_per_call", [1, 4])  # 4: update 16 is inside the call of updates 15..18
@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nonfinite_loss_policy(tmp_path, monkeypatch, policy, steps_per_call):
    config = load_config("tiny", train__nonfinite=policy, train__steps_per_call=steps_per_call)
    crafted = _digits_with_overflow_at(16, config)
    real_load = data.load
    monkeypatch.setattr(data, "load", lambda source, name, split, **kw: crafted if split == "train" else real_load(source, name, split, **kw))
    if policy == "stop":
        with pytest.raises(train.NonFiniteLossError, match="step 16: non-finite loss.*last good checkpoint is step 10"):
            train.run(config, str(tmp_path))
    else:
        summary = train.run(config, str(tmp_path))
        assert summary["nonfinite_steps"] == 1 and np.isfinite(summary["exact_neg_elbo"])


def test_same_config_and_seed_give_bit_identical_runs(tmp_path):
    config = load_config("tiny", train__num_steps=25)
    train.run(config, str(tmp_path / "a"))
    train.run(config, str(tmp_path / "b"))
    assert_trees_equal(saved_state(tmp_path / "a"), saved_state(tmp_path / "b"))
    other = load_config("tiny", train__num_steps=25, seed=1)
    train.run(other, str(tmp_path / "c"))
    with pytest.raises(AssertionError):
        assert_trees_equal(saved_state(tmp_path / "a")["params"], saved_state(tmp_path / "c")["params"])


def test_a_run_whose_every_step_is_non_finite_stops_instead_of_skipping_for_ever(tmp_path, monkeypatch):
    """Parameters that give no finite step (a switched-off dimension's variance overflowing, say)
    make every later step non-finite too: "skip" then stops after MAX_SKIPPED_IN_A_ROW of them
    with one line, instead of skipping every update to the end."""
    real_loss = objective.loss_and_metrics

    def nan_loss(*args, **kwargs):
        loss, metrics = real_loss(*args, **kwargs)
        return loss * jnp.nan, metrics

    monkeypatch.setattr(objective, "loss_and_metrics", nan_loss)
    config = load_config("tiny", train__num_steps=3 * train.MAX_SKIPPED_IN_A_ROW, train__steps_per_call=8,
                         train__checkpoint_every=40)
    with pytest.raises(train.NonFiniteLossError,
                       match=f"steps 1 to {train.MAX_SKIPPED_IN_A_ROW}: {train.MAX_SKIPPED_IN_A_ROW} "
                             "non-finite steps in a row.*last good checkpoint"):
        train.run(config, str(tmp_path))
