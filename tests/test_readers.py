"""Readers while a run trains: ``vscjax.load`` and the evaluation's restore take no lock, and a
checkpoint the trainer deletes under them (``train.max_to_keep``) is neither an error nor
corrupt: the newest checkpoint is read instead."""

import logging
import os
import shutil
import subprocess
import sys
import time

import pytest

import vscjax
from helpers import REPO_ROOT, committed_steps, load_config
from vscjax import checkpoints, faults, train, trained

TINY = os.path.join(REPO_ROOT, "configs", "tiny.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """An 8-step tiny run with checkpoints at 2, 4, 6 and 8."""
    path = tmp_path_factory.mktemp("readers")
    train.run(load_config("tiny", train__num_steps=8, train__checkpoint_every=2,
                          train__max_to_keep=4), str(path))
    assert committed_steps(path) == [2, 4, 6, 8]
    return path


def test_a_checkpoint_deleted_while_it_is_read_gives_the_newest(workdir, tmp_path, monkeypatch, caplog):
    """As the reader starts on checkpoint 6, the trainer commits 8 and deletes 6: the reader
    returns 8, calls nothing corrupt and moves nothing (a reader that kept to its first listing
    fell back to 4 with a "corrupt" warning, or failed)."""
    copy = tmp_path / "w"
    shutil.copytree(workdir, copy)
    steps = copy / "checkpoints"
    os.rename(steps / "8", tmp_path / "8")  # not yet written: the reader finds 2, 4 and 6
    real_read = checkpoints._item_metadata
    moved = []

    def trainer_moves_on(item_dir):
        if item_dir.startswith(str(steps / "6")) and not moved:
            os.rename(tmp_path / "8", steps / "8")  # the trainer commits its next checkpoint ...
            shutil.rmtree(steps / "6")  # ... and max_to_keep deletes 6 as the reader starts on it
            moved.append(True)
        return real_read(item_dir)

    monkeypatch.setattr(checkpoints, "_item_metadata", trainer_moves_on)
    with caplog.at_level(logging.WARNING):
        model = vscjax.load(str(copy))
        restored = trained.restore_model(str(copy), (8, 8, 1), 10)  # vscjax.evaluate's restore
    assert moved and model.step == 8 and restored.step == 8
    assert "corrupt" not in caplog.text
    assert committed_steps(copy) == [2, 4, 8] and not (copy / "corrupt_checkpoints").exists()


@pytest.mark.slow
def test_loads_in_a_loop_while_train_py_deletes_old_checkpoints_all_succeed(tmp_path):
    """A real train.py checkpointing every 2 steps and keeping 2, and vscjax.load called over
    and over until it ends: every call returns a model, of ever newer steps. (Before readers
    chose their checkpoint again, some calls failed here with FileNotFoundError.)"""
    workdir = tmp_path / "w"
    env = {key: value for key, value in os.environ.items() if key != faults.ENV}
    env["XLA_FLAGS"] = ""
    trainer = subprocess.Popen(
        [sys.executable, os.path.join(REPO_ROOT, "train.py"), "--config", TINY,
         "--config.train.num_steps=100", "--config.train.checkpoint_every=2",
         "--config.train.max_to_keep=2", "--config.train.log_every=50", "--workdir", str(workdir)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (workdir / "checkpoints").is_dir() or not committed_steps(workdir):
            assert trainer.poll() is None and time.time() < deadline, trainer.communicate()[1][-3000:]
            time.sleep(0.02)
        steps = []
        while trainer.poll() is None:
            steps.append(vscjax.load(str(workdir)).step)  # raises if a read fails
    finally:
        trainer.kill()
        _, err = trainer.communicate()
    assert trainer.returncode == 0, err[-3000:]
    assert len(steps) >= 10 and steps == sorted(steps) and len(set(steps)) >= 3, steps
