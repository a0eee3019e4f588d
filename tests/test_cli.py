"""The command lines: a tiny run end to end, and every bad input of the README's reliability
table, each in a subprocess: exit status 1 and one line on stderr naming the problem, never a
traceback."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO_ROOT, write_idx
from vscjax import evaluate, faults

TINY = os.path.join(REPO_ROOT, "configs", "tiny.py")


def _run(*args, module=None, devices=1):
    """``train.py`` (or ``python -m module``) with ``args`` on ``devices`` CPU devices."""
    command = ([sys.executable, "-m", module] if module
               else [sys.executable, os.path.join(REPO_ROOT, "train.py")])
    env = {key: value for key, value in os.environ.items() if key != faults.ENV}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    return subprocess.run([*command, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _assert_one_line(result, *words):
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_cli_trains_tiny_config(tmp_path):
    result = _run("--config", TINY, "--config.train.num_steps=12", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation exact -ELBO" in result.stdout and "leak" in result.stdout
    assert "a fresh start" in result.stdout
    assert json.load(open(tmp_path / "summary.json"))["step"] == 12


@pytest.mark.parametrize("args, devices, words", [
    (["--config.train.num_stepz=3"], 1, ["bad flag or config override", "num_stepz"]),
    (["--config.model.latent_dim=0"], 1, ["config key model.latent_dim: must be a positive integer"]),
    (["--config.objective.alpha=1.5"], 1, ["config key objective.alpha: must lie in (0, 1)"]),
    (["--config.train.batch_size=12"], 8, ["config key train.batch_size: 12 does not split over 8 devices"]),
    (["--config.train.batch_size=2048"], 1, ["config key train.batch_size: 2048 is larger than the 1317"]),
    (["--config.model.architecture=conv"], 1, ["config key model.architecture: the conv architecture "
                                               "takes 32x32 or 64x64 images, got (8, 8, 1)"]),
    (["--config.data.source=shapes", "--config.data.name=shapes-1"], 1,
     ["config key data.name: unknown shapes grid 'shapes-1'"]),
    (["--config.optimizer.learning_rate=nan"], 1, ["config key optimizer.learning_rate: must be a "
                                                   "finite number > 0, got nan"]),
    (["--config.model.latent_dim=2000000000"], 1, ["config key model.latent_dim: a run needs at least",
                                                   "GiB per device"]),
])
def test_impossible_config_is_named_in_one_line(tmp_path, args, devices, words):
    _assert_one_line(_run("--config", TINY, *args, "--workdir", str(tmp_path), devices=devices), *words)
    assert not os.path.exists(tmp_path / "checkpoints")  # stopped before any work


def test_a_misspelt_key_of_the_default_config_is_named_in_one_line(tmp_path):
    """Without --config the default config's overrides are checked as with it (they once
    raised a traceback while the flag was defined)."""
    _assert_one_line(_run("--config.train.num_step=300", "--workdir", str(tmp_path)),
                     "bad flag or config override", "num_step", 'Did you mean "num_steps"')


def test_a_missing_config_file_is_named_with_the_shipped_ones(tmp_path):
    _assert_one_line(_run("--config", "configs/nope.py", "--workdir", str(tmp_path)),
                     "config file not found: configs/nope.py", "configs: default.py, fashion_mnist.py")


@pytest.mark.parametrize("source, words", [
    ("def get_config(:\n", ["line 1: SyntaxError: invalid syntax"]),
    ("x = 1\n", ["has no get_config() function"]),
    ("def get_config():\n    return 3\n", ["get_config() returned 3 (a int), not an ml_collections"]),
    ("def get_config():\n    raise RuntimeError('boom')\n", ["line 2: RuntimeError: boom"]),
])
def test_a_config_file_that_fails_is_named_in_one_line(tmp_path, source, words):
    path = tmp_path / "bad.py"
    path.write_text(source)
    _assert_one_line(_run("--config", str(path), "--workdir", str(tmp_path / "w")),
                     f"train.py: config file {path}", *words)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("write, words", [
    (None, ["IDX data directory not found"]),
    (dict(images_magic=2049), ["train-images-idx3-ubyte.gz: wrong magic number, expected 2051, got 2049"]),
    (dict(cut=3), ["train-images-idx3-ubyte.gz: truncated"]),
    (dict(n_labels=4), ["has 5 images but", "train-labels-idx1-ubyte.gz has 4 labels"]),
])
def test_bad_idx_files_are_named_in_one_line(tmp_path, write, words):
    folder = tmp_path / "idx"
    if write is not None:
        folder.mkdir()
        write_idx(folder, **write)
    result = _run("--config", TINY, "--config.data.source=idx", f"--config.data.dir={folder}",
                  "--workdir", str(tmp_path / "run"))
    _assert_one_line(result, *words)


@pytest.mark.parametrize("source", ["npz", "folder"])
def test_bad_own_files_are_named_in_one_line(tmp_path, source):
    if source == "npz":
        path = tmp_path / "mine.npz"
        np.savez(path, images=np.full((40, 8, 8, 1), 255.0), labels=np.arange(40) % 4)
        words = [f"{path}: images span [255, 255], outside [0, 1]"]
    else:
        path = tmp_path / "mine"
        (path / "empty").mkdir(parents=True)
        words = [f"{path}/empty: class 0 holds no image"]
    result = _run("--config", TINY, f"--config.data.source={source}", f"--config.data.dir={path}",
                  "--workdir", str(tmp_path / "run"))
    _assert_one_line(result, *words)


# ----------------------------------------------------------------------------- a trained workdir


@pytest.fixture(scope="module")
def idx_run(tmp_path_factory):
    """A 4-step run (cosine learning rate) on 8x8 IDX images whose test split holds a label,
    10, that no training image has; and a folder of 10x10 images of the same name."""
    root = tmp_path_factory.mktemp("cli")
    folder = root / "shapes"
    folder.mkdir()
    write_idx(folder, "train", n_images=120, n_labels=120, rows=8, cols=8, labels=np.arange(120) % 10)
    write_idx(folder, "test", n_images=30, n_labels=30, rows=8, cols=8, labels=np.arange(30) % 11)
    other = root / "other" / "shapes"
    other.mkdir(parents=True)
    write_idx(other, "train", n_images=120, n_labels=120, rows=10, cols=10, labels=np.arange(120) % 10)
    args = ["--config", TINY, "--config.data.source=idx", "--config.data.name=shapes",
            f"--config.data.dir={folder}", "--config.train.batch_size=16",
            "--config.train.eval_batch_size=16", "--config.train.num_steps=4",
            "--config.train.checkpoint_every=2", "--config.optimizer.lr_schedule=cosine",
            "--workdir", str(root / "run")]
    result = _run(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(args=args, workdir=root / "run", other=other)


@pytest.mark.parametrize("change, words", [
    (["--config.model.latent_dim=32"], ["config key model.latent_dim: the checkpoint in this workdir was "
                                        "made with 16, this run asks for 32"]),
    (["--config.train.num_steps=8"], ["config key train.num_steps: the checkpoint in this workdir was made "
                                      "with 4, this run asks for 8 (the cosine learning-rate schedule"]),
])
def test_incompatible_resume_is_refused_in_one_line(idx_run, change, words):
    saved_config = (idx_run["workdir"] / "config.json").read_text()
    _assert_one_line(_run(*idx_run["args"], *change), *words)
    assert (idx_run["workdir"] / "config.json").read_text() == saved_config


def test_images_of_another_shape_for_the_checkpoint_are_named_in_one_line(idx_run):
    """data.dir may move, but the images must keep their shape: the restore names the
    checkpoint and the arrays that no longer fit, and keeps it."""
    saved_config = (idx_run["workdir"] / "config.json").read_text()
    result = _run(*idx_run["args"], f"--config.data.dir={idx_run['other']}")
    _assert_one_line(result, "checkpoints/4 does not fit the train state of this run",
                     "(64,) in the checkpoint, (100,) in this run")
    assert sorted(os.listdir(idx_run["workdir"] / "checkpoints")) == ["2", "4"]
    assert (idx_run["workdir"] / "config.json").read_text() == saved_config  # a refused run writes nothing


def test_evaluate_names_labels_outside_the_training_classes_in_one_line(idx_run):
    result = _run("--workdir", str(idx_run["workdir"]), "--no-plots", module="vscjax.evaluate")
    _assert_one_line(result, "shapes/test: labels span [0, 10], outside the 10 classes of shapes/train")


def test_evaluate_names_a_missing_workdir_in_one_line(tmp_path):
    _assert_one_line(_run("--workdir", str(tmp_path / "nowhere"), module="vscjax.evaluate"),
                     "no config.json in")


@pytest.mark.parametrize("flags, words", [
    (["--probe-train", "0"], "probe_train (--probe-train) must be an integer >= 2, got 0"),
    (["--pairs", "0"], "pairs (--pairs) must be an integer >= 1, got 0"),
    (["--iw-samples", "-3"], "iw_samples (--iw-samples) must be an integer >= 0, got -3"),
    (["--pairs", "abc"], "argument --pairs: invalid int value: 'abc'"),
    (["--pairs", str(10**16)], "--pairs 10,000,000,000,000,000 needs"),
    (["--iw-samples", str(10**13)], "--iw-samples 10,000,000,000,000 needs"),
])
def test_evaluate_refuses_counts_out_of_range_before_any_work(idx_run, flags, words):
    """Each once overwrote eval.json with n/a, or failed after the work, or ran out of memory."""
    path = idx_run["workdir"] / "eval_validation.json"
    path.write_text('{"an earlier": "evaluation"}')
    with pytest.raises(SystemExit) as raised:
        evaluate.main(["--workdir", str(idx_run["workdir"]), "--split", "validation", "--no-plots", *flags])
    message = str(raised.value.code)
    assert message.startswith("vscjax.evaluate: ") and words in message and "\n" not in message, message
    assert path.read_text() == '{"an earlier": "evaluation"}'


@pytest.mark.slow
def test_hand_edited_files_are_named_in_one_line(idx_run, tmp_path):
    """A metrics.jsonl line and a config.json value edited by hand: train.py and
    vscjax.evaluate name the file (and the line or key) instead of raising deep inside."""
    workdir = tmp_path / "w"
    shutil.copytree(idx_run["workdir"], workdir)
    metrics = workdir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    args = [*idx_run["args"][:-1], str(workdir)]
    _assert_one_line(_run(*args), f"{metrics} line 2 is not JSON")
    config = workdir / "config.json"
    config.write_text(config.read_text().replace('"eval_every": 0', '"eval_every": -7'))
    _assert_one_line(_run("--workdir", str(workdir), "--split", "validation", module="vscjax.evaluate"),
                     f"{config}: config key train.eval_every: must be an integer >= 0, got -7")
