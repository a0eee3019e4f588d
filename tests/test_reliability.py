"""Reliability: kills at any moment, SIGTERM, corrupt checkpoints, non-finite losses, determinism."""

import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO_ROOT, assert_trees_equal, load_config
from vscjax import data, train
from vscjax.checkpoints import Checkpoints

TINY = os.path.join(REPO_ROOT, "configs", "tiny.py")
# Long enough (in steps) that kills land in training and in checkpoint saves, not only start-up.
KILL_ARGS = ["--config.train.num_steps=1500", "--config.train.checkpoint_every=25",
             "--config.train.log_every=50", "--config.train.max_to_keep=2"]


def _final_params(workdir, config):
    trainer = train.Trainer(config)
    checkpoints = Checkpoints(workdir, config)
    try:
        return checkpoints.restore_latest(trainer.abstract_state()).params
    finally:
        checkpoints.close()


def _start(workdir):
    env = {**os.environ, "XLA_FLAGS": ""}  # the trainer on one device, as a user runs it
    return subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "train.py"), "--config", TINY,
                             *KILL_ARGS, "--workdir", str(workdir)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_config():
    return load_config("tiny", train__num_steps=1500, train__checkpoint_every=25,
                       train__log_every=50, train__max_to_keep=2)


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    straight = _start(tmp_path / "straight")
    assert straight.wait(timeout=120) == 0, straight.stderr.read()[-2000:]
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(5):
        proc = _start(tmp_path / "killed")
        time.sleep(rng.uniform(2.0, 7.0))  # start-up is ~2-4 s; training ~3 s more
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 3
    final = _start(tmp_path / "killed")
    assert final.wait(timeout=120) == 0, final.stderr.read()[-2000:]
    config = _kill_config()
    assert_trees_equal(_final_params(tmp_path / "straight", config), _final_params(tmp_path / "killed", config))


def test_sigterm_saves_then_resume_is_bit_identical(tmp_path):
    proc = _start(tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "interrupted at step" in out
    interrupted = int(out.split("interrupted at step")[1].split(";")[0])
    assert 0 < interrupted < 1500
    assert os.path.isdir(tmp_path / "run" / "checkpoints" / str(interrupted))
    for workdir in ("run", "straight"):  # resume, and an uninterrupted run, both on one device
        proc = _start(tmp_path / workdir)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    config = _kill_config()
    assert_trees_equal(_final_params(tmp_path / "run", config), _final_params(tmp_path / "straight", config))


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
    assert summary["step"] == 40
    assert any("checkpoints/30 is corrupt" in r.getMessage() for r in caplog.records)
    assert os.path.isdir(tmp_path / "run" / "corrupt_checkpoints" / "30")
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints" / "20")) == good_before
    train.run(config40, str(tmp_path / "straight"))
    assert_trees_equal(_final_params(tmp_path / "run", config40), _final_params(tmp_path / "straight", config40))


def _digits_with_overflow_at(step, config):
    """Digits whose training batch at ``step`` (only) holds a pixel of 3e38: the loss overflows."""
    real = data.load("digits", "digits", "train")
    sampler = data.BatchSampler(real.labels, config.train.batch_size, seed=config.seed,
                                num_classes=real.num_classes)
    earlier = set(np.concatenate([sampler.indices(s) for s in range(step)]).tolist())
    victim = next(i for i in sampler.indices(step) if i not in earlier)
    images = real.images.copy()
    images[victim, 3, 3, 0] = 3e38
    return data.Dataset(images, real.labels, real.num_classes, "digits-overflow")


@pytest.mark.parametrize("steps_per_call", [1, 4])  # 4: step 15 is inside the call [14, 18)
@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nonfinite_loss_policy(tmp_path, monkeypatch, policy, steps_per_call):
    config = load_config("tiny", train__nonfinite=policy, train__steps_per_call=steps_per_call)
    crafted = _digits_with_overflow_at(15, config)
    real_load = data.load
    monkeypatch.setattr(data, "load", lambda source, name, split, **kw: crafted if split == "train" else real_load(source, name, split, **kw))
    if policy == "stop":
        with pytest.raises(train.NonFiniteLossError, match="step 15: non-finite loss.*last good checkpoint is step 10"):
            train.run(config, str(tmp_path))
    else:
        summary = train.run(config, str(tmp_path))
        assert summary["nonfinite_steps"] == 1 and np.isfinite(summary["exact_neg_elbo"])


def test_same_config_and_seed_give_bit_identical_runs(tmp_path):
    config = load_config("tiny", train__num_steps=25)
    train.run(config, str(tmp_path / "a"))
    train.run(config, str(tmp_path / "b"))
    assert_trees_equal(_final_params(tmp_path / "a", config), _final_params(tmp_path / "b", config))
    other = load_config("tiny", train__num_steps=25, seed=1)
    train.run(other, str(tmp_path / "c"))
    with pytest.raises(AssertionError):
        assert_trees_equal(_final_params(tmp_path / "a", config), _final_params(tmp_path / "c", other))
