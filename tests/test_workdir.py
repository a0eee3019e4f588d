"""The workdir's files: names, whole-file writes that a failure cannot cut, and their readers."""

import json
import os

import pytest

from helpers import load_config
from vscjax import workdir as files


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = str(tmp_path / "summary.json")
    files.write_json_atomic(path, {"step": 1})
    # A failure half-way through writing (a character the file's encoding refuses).
    with pytest.raises(UnicodeEncodeError):
        files.write_text_atomic(path, '{"step": 2, "name": "\ud800"}')
    assert json.load(open(path)) == {"step": 1} and os.listdir(tmp_path) == ["summary.json"]

    # A failure at the rename that puts the new file in place.
    def refuse(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="disk gone"):
        files.write_json_atomic(path, {"step": 3})
    assert json.load(open(path)) == {"step": 1} and os.listdir(tmp_path) == ["summary.json"]


def test_results_and_codes_are_named_by_split(tmp_path):
    assert files.results_path("w") == os.path.join("w", "eval.json")
    assert files.results_path("w", "validation") == os.path.join("w", "eval_validation.json")
    assert files.codes_path("w", "test") == os.path.join("w", "codes_test.npz")
    results = {"elbo": {"exact_neg_elbo": 1.5}, "frequency": [[0.25, 1.0], [0.0, 0.5]], "notes": []}
    path = files.write_results(str(tmp_path), "validation", results)
    assert path == files.results_path(str(tmp_path), "validation")
    text = open(path).read()
    assert json.loads(text) == results
    assert "    [0.25, 1.0],\n" in text  # a matrix: one row a line


def test_read_metrics_leaves_out_a_line_cut_by_a_kill(tmp_path):
    records = [{"split": "train", "step": 1, "loss": 3.0}, {"split": "train", "step": 2, "loss": 2.0}]
    line = json.dumps({"split": "train", "step": 3, "loss": 1.0})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records)
                                            + line[:len(line) // 2])
    assert files.read_metrics(str(tmp_path)) == records


def test_config_round_trip_and_keys_added_since_keep_their_defaults(tmp_path):
    config = load_config("tiny", train__num_steps=7)
    files.write_config(str(tmp_path / "run"), config)  # the folder is made
    assert files.read_config(str(tmp_path / "run")).to_json() == config.to_json()
    saved = files.saved_config(str(tmp_path / "run"))
    del saved["train"]["steps_per_call"]  # a key a newer schema added
    files.write_json_atomic(files.config_path(str(tmp_path / "run")), saved)
    assert files.read_config(str(tmp_path / "run")).train.steps_per_call == 1
    assert files.saved_config(str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match=r"no config.json in .* \(is it a train.py workdir\?\)"):
        files.read_config(str(tmp_path))
