"""One run per workdir: a second ``train.py`` on a workdir in use stops at once, naming the
holder, and changes nothing; a lock left by a killed run blocks nothing."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import REPO_ROOT, load_config
from vscjax import faults, lock, train
from vscjax.workdir import lock_path

TINY = os.path.join(REPO_ROOT, "configs", "tiny.py")


def test_a_run_on_a_workdir_in_use_stops_before_touching_it(tmp_path):
    workdir = str(tmp_path / "w")
    with lock.workdir_lock(workdir):
        before = sorted(os.listdir(workdir))
        with pytest.raises(lock.WorkdirBusyError) as raised:
            train.run(load_config("tiny", train__num_steps=2), workdir)
        assert sorted(os.listdir(workdir)) == before == ["train.lock"]
    message = str(raised.value)
    assert f"process {os.getpid()} on {socket.gethostname()}" in message
    assert "is in use by another training run" in message and "\n" not in message


def test_a_lock_file_left_by_a_dead_run_blocks_nothing(tmp_path):
    """The lock is the OS's, held by an open file: the file a killed run leaves behind names a
    holder that is gone, and the next run takes the lock and writes its own name."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "train.lock").write_text(json.dumps({"host": "elsewhere", "pid": 999999, "since": "x"}))
    with lock.workdir_lock(str(workdir)):
        assert lock.holder(str(workdir))["pid"] == os.getpid()


def _train_cli(workdir, *extra):
    env = {key: value for key, value in os.environ.items() if key != faults.ENV}
    env["XLA_FLAGS"] = ""
    return [sys.executable, os.path.join(REPO_ROOT, "train.py"), "--config", TINY, *extra,
            "--workdir", str(workdir)], env


@pytest.mark.slow
def test_a_second_train_py_on_the_same_workdir_stops_at_once_and_the_first_loses_nothing(tmp_path):
    """The first run is paused (SIGSTOP) once it has logged a step, while the second starts:
    the second exits 1 with one line naming the first's process, the paused run's files are
    untouched, and the first finishes with every record of its metrics log."""
    workdir = tmp_path / "w"
    args = ["--config.train.num_steps=20", "--config.train.log_every=10",
            "--config.train.checkpoint_every=10"]
    command, env = _train_cli(workdir, *args)
    first = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        metrics = workdir / "metrics.jsonl"
        deadline = time.time() + 300
        while not (metrics.exists() and '"split": "train"' in metrics.read_text()):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.time() < deadline, "the first run logged no step"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGSTOP)
        files = {path: open(path, "rb").read() for path in (metrics, workdir / "config.json")}
        second = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                timeout=300)
        assert {path: open(path, "rb").read() for path in files} == files
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: "), second.stderr[-3000:]
    assert f"process {first.pid} on {socket.gethostname()}" in lines[0]
    assert first.returncode == 0, err[-3000:]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records if r.get("split") == "train"] == [1, 10, 20]
    assert json.load(open(workdir / "summary.json"))["step"] == 20
    assert lock.holder(str(workdir))["pid"] == first.pid  # the second run never took it


def test_a_workdir_that_cannot_hold_a_lock_is_named(tmp_path, monkeypatch):
    """A folder where the lock file cannot be made (read-only, no permission) fails as an
    OSError naming the file, before anything else is written."""
    workdir = tmp_path / "w"
    real_open = os.open

    def refuse(path, flags, mode=0o777, **kwargs):
        if str(path).endswith("train.lock"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(lock.os, "open", refuse)
    with pytest.raises(PermissionError) as raised:
        train.run(load_config("tiny", train__num_steps=2), str(workdir))
    assert raised.value.filename == lock_path(str(workdir))
    assert os.listdir(workdir) == []
