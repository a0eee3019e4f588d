"""The workdir's files: names, their readers, and what a reader says of a file that is not
what it should be."""

import json
import os

import pytest

from helpers import load_config
from vscjax import workdir as files
from vscjax.atomic import write_json_atomic
from vscjax.config import ConfigError


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
    write_json_atomic(files.config_path(str(tmp_path / "run")), saved)
    assert files.read_config(str(tmp_path / "run")).train.steps_per_call == 1
    assert files.saved_config(str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match=r"no config.json in .* \(is it a train.py workdir\?\)"):
        files.read_config(str(tmp_path))


def test_read_metrics_names_a_line_that_is_not_a_record(tmp_path):
    """A hand-edited line before the last is not a cut line: it is named, never dropped (the
    trainer rewrites the file from what it reads)."""
    for bad in ('{"split": "train", "step": 1', '[1, 2]', '{"split": "train"}', '{"step": "3"}'):
        (tmp_path / "metrics.jsonl").write_text(bad + "\n" + json.dumps({"step": 2}) + "\n")
        with pytest.raises(files.WorkdirFileError, match=r"metrics.jsonl line 1 is not"):
            files.read_metrics(str(tmp_path))


@pytest.mark.parametrize("edit, words", [
    (lambda text: text[:-5], ["config.json is not valid JSON"]),
    (lambda text: "[]", ["config.json holds a list, not a JSON object"]),
    (lambda text: text.replace('"num_steps"', '"num_stepz"'), ["train.num_stepz is not a config key"]),
    (lambda text: text.replace('"latent_dim": 16', '"latent_dim": "sixteen"'),
     ["config key model.latent_dim"]),
    (lambda text: text.replace('"learning_rate": 0.001', '"learning_rate": NaN'),
     ["config key optimizer.learning_rate: must be a finite number > 0, got nan"]),
    (lambda text: text.replace('"hidden": [\n      32\n    ]', '"hidden": [32, "a"]'),
     ["config key model.hidden: must be a tuple whose every size is a positive integer"]),
    (lambda text: text.replace('"train": {', '"train": 3, "x": {'), ["config key train must be a group"]),
])
def test_a_hand_edited_config_json_is_named_with_its_key(tmp_path, edit, words):
    files.write_config(str(tmp_path), load_config("tiny"))
    path = tmp_path / "config.json"
    text = path.read_text()
    path.write_text(edit(text))
    assert path.read_text() != text
    with pytest.raises((ConfigError, files.WorkdirFileError)) as raised:
        files.read_config(str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("content", ['{"name": "d", "image_shape": [8, 8], "num_classes": 10}',
                                     '{"name": "d", "image_shape": [8, 8, 1], "num_classes": 0}',
                                     '{"name": "d"}', 'not json'])
def test_a_bad_dataset_json_is_named(tmp_path, content):
    (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(files.WorkdirFileError, match="dataset.json"):
        files.read_dataset_info(str(tmp_path))
