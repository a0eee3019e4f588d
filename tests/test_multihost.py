"""Several processes as one run: start-up flags, and real two-process runs on this machine.

The tests marked ``multihost`` launch ``train.py`` and ``python -m vscjax.evaluate`` as 2
processes with 2 CPU devices each, joined through a free localhost port (JAX's CPU collectives
over gloo), and compare them with one process of 4 devices. They take about two minutes:
``python -m pytest -m multihost``. Every process is killed at the end of its test, whatever
happened.
"""

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from helpers import REPO_ROOT, load_config
from vscjax import checkpoints, data, evaluate, multihost, train, trained

TINY = os.path.join(REPO_ROOT, "configs", "tiny.py")
# Long enough (in steps) that a signal lands in training; checkpoints every 25 steps.
PREEMPT_ARGS = ["--config.train.num_steps=150", "--config.train.checkpoint_every=25",
                "--config.train.log_every=5", "--config.train.max_to_keep=3"]
TIMEOUT = 240  # seconds any one launch may take on a busy 2-core machine


# ----------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("flags, message", [
    (dict(process_id=1), "--process_id needs --coordinator_address and --num_processes too"),
    (dict(coordinator_address="localhost:1234", num_processes=2),
     "--coordinator_address and --num_processes needs --process_id too"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2),
     r"--process_id must lie in \[0, 2\)"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0),
     "--coordinator_address must be host:port"),
    (dict(coordinator_address="localhost:1234", num_processes=0, process_id=0),
     "--num_processes must be at least 1"),
    (dict(heartbeat_timeout=0), "--heartbeat_timeout must be positive"),
])
def test_start_up_flags_that_do_not_go_together_are_named(flags, message):
    with pytest.raises(multihost.MultihostError, match=message):
        multihost.initialize(**flags)


def _run(command, env=None, timeout=TIMEOUT):
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          env=env)


def test_clis_name_a_bad_start_up_flag_in_one_line(tmp_path):
    result = _run([sys.executable, os.path.join(REPO_ROOT, "train.py"), "--config", TINY,
                   "--workdir", str(tmp_path), "--process_id", "1"])
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("train.py: --process_id needs --coordinator_address and "
                                     "--num_processes too: give all three, or none on Cloud TPU and SLURM")
    with pytest.raises(SystemExit, match="vscjax.evaluate: --num_processes needs"):
        evaluate.main(["--workdir", str(tmp_path), "--num_processes", "2"])


def test_a_lone_process_starts_no_backend_and_joins_nothing():
    """Start-up must leave the backend alone: JAX refuses to join processes after it started."""
    check = ("from vscjax import multihost; multihost.initialize(); "
             "from jax._src import xla_bridge, distributed; "
             "assert not xla_bridge.backends_are_initialized(), 'backend started'; "
             "assert distributed.global_state.client is None, 'joined'")
    slurm_of_one = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node1", "SLURM_NTASKS": "1",
                    "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    for extra in ({}, slurm_of_one):
        result = _run([sys.executable, "-c", check], env={**os.environ, **extra}, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]


def test_slurm_is_detected_from_its_environment(monkeypatch):
    for name, value in {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
                        "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(name, value)
    assert multihost.detected_cluster() == ("slurm", 2)


def test_one_process_votes_alone_and_at_once():
    vote = multihost.StopVote(jax.make_mesh((8,), ("data",)))
    assert vote(False) is False and vote(True) is True
    assert multihost.any_process(True) and not multihost.any_process(False)


# ----------------------------------------------------------------------------- launching processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(num_devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}",
            "JAX_PLATFORMS": "cpu"}


def _train_command(workdir, *args):
    return [sys.executable, os.path.join(REPO_ROOT, "train.py"), "--config", TINY,
            "--workdir", str(workdir), *args]


class _Process:
    """A launched process; its output goes to files beside the run."""

    def __init__(self, command, env, log_prefix):
        self.out_path, self.err_path = f"{log_prefix}.out", f"{log_prefix}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.popen = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=err,
                                          start_new_session=True)

    def wait(self, timeout=TIMEOUT) -> int:
        return self.popen.wait(timeout=timeout)

    @property
    def out(self) -> str:
        return open(self.out_path).read()

    @property
    def err(self) -> str:
        return open(self.err_path).read()

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


@contextlib.contextmanager
def _processes(command, log_prefix, num_processes=2):
    """``command`` as ``num_processes`` processes of one run (2 CPU devices each); all of them
    are killed on leaving, whatever happened."""
    port = _free_port()
    launched = []
    try:
        for i in range(num_processes):
            flags = ["--coordinator_address", f"localhost:{port}", "--num_processes",
                     str(num_processes), "--process_id", str(i)]
            launched.append(_Process(command + flags, _env(2), f"{log_prefix}.{i}"))
        yield launched
    finally:
        for process in launched:
            process.kill()


def _run_to_completion(command, log_prefix):
    """Run ``command`` as 2 processes; both must exit 0. Returns the processes."""
    with _processes(command, log_prefix) as launched:
        for process in launched:
            assert process.wait() == 0, process.err[-3000:]
    return launched


def _run_alone(command, log_prefix, num_devices=4):
    process = _Process(command, _env(num_devices), log_prefix)
    try:
        assert process.wait() == 0, process.err[-3000:]
    finally:
        process.kill()
    return process


def _final_params(workdir):
    return jax.device_get(trained.restore_model(str(workdir), (8, 8, 1), 10).params)


def _assert_params_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def _records(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _wait_for_train_step(workdir, step, launched, timeout=TIMEOUT):
    """Wait until the writer has logged a training record at ``step`` or later."""
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert all(p.popen.poll() is None for p in launched), "a process ended early"
        if os.path.exists(path):
            steps = [json.loads(line)["step"] for line in open(path).read().splitlines()[:-1]]
            if steps and max(steps) >= step:
                return
        time.sleep(0.05)
    raise AssertionError(f"no training record at step {step} within {timeout} s")


# ----------------------------------------------------------------------------- two processes


@pytest.mark.multihost
def test_two_processes_train_as_one_process_of_four_devices(tmp_path):
    # eval_batch_size 48: the 120 validation images end in a padded batch.
    args = ["--config.train.eval_every=20", "--config.train.eval_batch_size=48",
            "--config.train.log_every=1"]
    two = _run_to_completion(_train_command(tmp_path / "two", *args), tmp_path / "two")
    _run_alone(_train_command(tmp_path / "one", *args), tmp_path / "one")
    _assert_params_close(_final_params(tmp_path / "two"), _final_params(tmp_path / "one"))
    # In-training evaluation (validation at step 20 and at the end) and every step's loss.
    records_two, records_one = _records(tmp_path / "two"), _records(tmp_path / "one")
    assert [(r.get("split"), r["step"]) for r in records_two] == [(r.get("split"), r["step"]) for r in records_one]
    for a, b in zip(records_two, records_one):
        for name in ("loss", "exact_neg_elbo", "relaxed_neg_elbo", "recon", "expected_active"):
            if name in b:
                assert a[name] == pytest.approx(b[name], rel=1e-5), (a.get("split"), a["step"], name)
    summary = json.load(open(tmp_path / "two" / "summary.json"))
    assert summary["num_devices"] == 4 and summary["step"] == 40
    # One writer: no record twice, one TensorBoard file, one printed summary.
    assert len(glob.glob(str(tmp_path / "two" / "tensorboard" / "events.*"))) == 1
    assert "validation exact -ELBO" in two[0].out and "validation exact -ELBO" not in two[1].out


@pytest.mark.multihost
def test_two_processes_feed_the_global_batch_of_one(tmp_path):
    out = tmp_path / "batches.npz"
    command = [sys.executable, os.path.join(REPO_ROOT, "tests", "multihost_batches.py"), str(out)]
    _run_to_completion(command, tmp_path / "batches")
    got = np.load(out)
    config = load_config("tiny")
    train_set = data.load("digits", "digits", "train")
    sampler = data.BatchSampler(train_set.labels, config.train.batch_size, seed=config.seed,
                                num_classes=train_set.num_classes)
    for step in range(len(got["label"])):
        idx = sampler.indices(step)
        np.testing.assert_array_equal(got["image"][step], train_set.images[idx])
        np.testing.assert_array_equal(got["label"][step], train_set.labels[idx])


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Final parameters of an uninterrupted PREEMPT_ARGS run: one process, 4 devices."""
    workdir = tmp_path_factory.mktemp("straight")
    _run_alone(_train_command(workdir, *PREEMPT_ARGS), workdir / "log")
    return _final_params(workdir)


def _saved_step(text: str) -> int:
    steps = re.findall(r"saved step (\d+)", text)
    assert len(steps) == 1, text[-2000:]
    return int(steps[0])


@pytest.mark.multihost
def test_sigterm_to_one_process_saves_both_at_one_step_then_resumes(tmp_path, straight_run):
    run = tmp_path / "run"
    with _processes(_train_command(run, *PREEMPT_ARGS), tmp_path / "first") as launched:
        _wait_for_train_step(run, 20, launched)
        launched[1].popen.send_signal(signal.SIGTERM)  # the writer must hear of it too
        assert [p.wait() for p in launched] == [0, 0], launched[0].err[-2000:] + launched[1].err[-2000:]
    step = _saved_step(launched[1].err)
    assert "SIGTERM received" in launched[1].err
    assert _saved_step(launched[0].err) == step and f"interrupted at step {step}" in launched[0].out
    assert 20 < step < 150 and os.path.isdir(run / "checkpoints" / str(step))
    _run_to_completion(_train_command(run, *PREEMPT_ARGS), tmp_path / "rerun")
    _assert_params_close(_final_params(run), straight_run)


@pytest.mark.multihost
def test_sigkill_of_one_process_stops_the_other_then_both_resume(tmp_path, straight_run):
    run = tmp_path / "run"
    command = _train_command(run, *PREEMPT_ARGS, "--heartbeat_timeout=10")
    with _processes(command, tmp_path / "first") as launched:
        _wait_for_train_step(run, 75, launched)  # checkpoints 25 and 50 are sealed
        launched[1].kill()
        killed = time.time()
        assert launched[0].wait(timeout=60) != 0
        assert time.time() - killed < 60
    last_line = launched[0].err.strip().splitlines()[-1]
    assert last_line == ("train.py: process 1 sent no heartbeat for 10 s (dead or stuck); stopping. "
                         "Rerun every process to resume from the last checkpoint.")
    # The save in flight at the kill is lost, and the newest sealed checkpoint is damaged: both
    # processes must agree to fall back to the one before it, moved aside once.
    folder = run / "checkpoints"
    steps = sorted(int(s) for s in os.listdir(folder) if s.isdigit())
    sealed = [s for s in steps if os.path.exists(folder / str(s) / checkpoints.CHECKSUMS_FILE)]
    damaged = sealed[-1]
    assert len(sealed) >= 2, steps
    for s in steps:
        if s > damaged:
            shutil.rmtree(folder / str(s))
    files = [f for f in glob.glob(str(folder / str(damaged) / "**" / "*"), recursive=True)
             if os.path.isfile(f) and checkpoints.CHECKSUMS_FILE not in f]
    victim = max(files, key=os.path.getsize)
    with open(victim, "r+b") as f:
        f.seek(os.path.getsize(victim) // 2)
        f.write(b"\x13\x37" * 8)
    rerun = _run_to_completion(command, tmp_path / "rerun")
    assert os.listdir(run / "corrupt_checkpoints") == [str(damaged)]
    assert f"checkpoints/{damaged} is corrupt" in rerun[0].err
    _assert_params_close(_final_params(run), straight_run)


def _assert_same_results(a, b, where="eval.json"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_results(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_results(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6, nan_ok=True), where
    else:
        assert a == b, where


@pytest.mark.multihost
def test_evaluate_on_two_processes_writes_the_numbers_of_one(tmp_path):
    # eval_batch_size 96: the 360 test images end in a padded batch.
    train.run(load_config("tiny", train__num_steps=10, train__eval_batch_size=96), str(tmp_path))
    alone = evaluate.evaluate_workdir(str(tmp_path), probe_train=200, make_plots=False)  # 8 devices
    os.remove(tmp_path / "eval.json")
    command = [sys.executable, "-m", "vscjax.evaluate", "--workdir", str(tmp_path), "--no-plots",
               "--probe-train", "200"]
    two = _run_to_completion(command, tmp_path / "evaluate")
    assert "exact -ELBO" in two[0].out and "exact -ELBO" not in two[1].out
    saved, expected = json.load(open(tmp_path / "eval.json")), json.loads(json.dumps(alone))
    assert saved.pop("provenance")["devices"]["processes"] == 2  # where it ran differs, by design
    expected.pop("provenance")
    _assert_same_results(saved, expected)
