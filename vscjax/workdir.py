"""The files of a workdir and their names: what ``train.py`` writes and every reader reads.

    <workdir>/
      config.json           the config the run trains with (write_config, read_config)
      dataset.json          image shape and class count of the training data (vscjax.load)
      checkpoints/<step>/   orbax checkpoints (vscjax.checkpoints)
      corrupt_checkpoints/  checkpoints found damaged, moved out of the way
      metrics.jsonl         one JSON record a line (appended by the trainer; read_metrics)
      tensorboard/          TensorBoard event files
      summary.json          the end-of-run summary (write_summary)
      eval.json             the evaluation of the test split; eval_<split>.json of another split
      codes_<split>.npz     a split's codes (vscjax.codes.save_codes)
      plots/                pictures
      profile/              a jax.profiler trace
      train.lock            held by the run that trains in the workdir (vscjax.lock)

Every other module asks this one for a path instead of spelling a name. Every JSON file is
written whole (``vscjax.atomic``): into a temporary file in the same folder, then renamed over
the old one, so that a kill, a full disk or a reader never meets half a file. ``metrics.jsonl``
is the one file appended to, a whole line at a time; its readers leave out a last line cut by
a kill (the trainer's next run drops it).

A file that exists but cannot be read as what it should be (invalid JSON, a record without
its step: hand-edited, or from another program) raises :class:`WorkdirFileError` naming the
file, and the line for ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import ml_collections

from vscjax.atomic import write_json_atomic, write_text_atomic
from vscjax.config import from_saved

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"
TENSORBOARD_DIR = "tensorboard"
PLOTS_DIR = "plots"
PROFILE_DIR = "profile"
LOCK_FILE = "train.lock"
TEST_SPLIT = "test"  # the split whose evaluation is plain eval.json


# ----------------------------------------------------------------------------- paths


def config_path(workdir: str) -> str:
    """``<workdir>/config.json``."""
    return os.path.join(workdir, CONFIG_FILE)


def dataset_path(workdir: str) -> str:
    """``<workdir>/dataset.json``."""
    return os.path.join(workdir, DATASET_FILE)


def metrics_path(workdir: str) -> str:
    """``<workdir>/metrics.jsonl``."""
    return os.path.join(workdir, METRICS_FILE)


def summary_path(workdir: str) -> str:
    """``<workdir>/summary.json``."""
    return os.path.join(workdir, SUMMARY_FILE)


def results_path(workdir: str, split: str = TEST_SPLIT) -> str:
    """Where the evaluation of ``split`` goes: ``eval.json`` (test), else ``eval_<split>.json``."""
    return os.path.join(workdir, "eval.json" if split == TEST_SPLIT else f"eval_{split}.json")


def codes_path(workdir: str, split: str = TEST_SPLIT) -> str:
    """Where the codes of ``split`` go: ``codes_<split>.npz``."""
    return os.path.join(workdir, f"codes_{split}.npz")


def checkpoints_dir(workdir: str) -> str:
    """``<workdir>/checkpoints``."""
    return os.path.join(workdir, CHECKPOINTS_DIR)


def corrupt_dir(workdir: str) -> str:
    """``<workdir>/corrupt_checkpoints``."""
    return os.path.join(workdir, CORRUPT_DIR)


def tensorboard_dir(workdir: str) -> str:
    """``<workdir>/tensorboard``."""
    return os.path.join(workdir, TENSORBOARD_DIR)


def plots_dir(workdir: str) -> str:
    """``<workdir>/plots``."""
    return os.path.join(workdir, PLOTS_DIR)


def profile_dir(workdir: str) -> str:
    """``<workdir>/profile``."""
    return os.path.join(workdir, PROFILE_DIR)


def lock_path(workdir: str) -> str:
    """``<workdir>/train.lock``."""
    return os.path.join(workdir, LOCK_FILE)


class WorkdirFileError(ValueError):
    """A workdir file that exists but does not hold what it should; the message names it."""


def _read_json(path: str, what: str) -> dict:
    """The JSON object in ``path``, or :class:`WorkdirFileError` naming the file."""
    with open(path) as f:
        text = f.read()
    try:
        value = json.loads(text)
    except ValueError as err:
        raise WorkdirFileError(f"{path} is not valid JSON ({err}); it should hold {what}") from None
    if not isinstance(value, dict):
        raise WorkdirFileError(f"{path} holds a {type(value).__name__}, not a JSON object of {what}")
    return value


# ----------------------------------------------------------------------------- the files


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Record ``config`` as the config the workdir's run trains with (the folder is made)."""
    os.makedirs(workdir, exist_ok=True)
    write_text_atomic(config_path(workdir), config.to_json(indent=2))


def saved_config(workdir: str) -> dict | None:
    """The workdir's ``config.json`` as a dict of dicts, or None if there is none.

    Raises:
      WorkdirFileError: the file is not a JSON object.
    """
    path = config_path(workdir)
    if not os.path.exists(path):
        return None
    return _read_json(path, "the config the run trains with")


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (keys added since then keep their defaults).

    Raises:
      FileNotFoundError: the workdir has no ``config.json``.
      WorkdirFileError: it is not a JSON object.
      vscjax.config.ConfigError: it holds a key the schema does not have, or a value of the
        wrong type (the message names the file and the key).
    """
    saved = saved_config(workdir)
    if saved is None:
        raise FileNotFoundError(f"no {CONFIG_FILE} in {workdir} (is it a train.py workdir?)")
    return from_saved(saved, source=config_path(workdir))


def write_dataset_info(workdir: str, name: str, image_shape: Sequence[int], num_classes: int) -> None:
    """Record in ``dataset.json`` what a model of this workdir was built for."""
    write_json_atomic(dataset_path(workdir),
                      {"name": name, "image_shape": list(image_shape), "num_classes": num_classes})


def read_dataset_info(workdir: str) -> dict:
    """``dataset.json``: name, image_shape and num_classes of the model's data.

    Raises:
      FileNotFoundError: the workdir has no ``dataset.json`` (made by an older train.py).
      WorkdirFileError: the file does not hold a name, an image shape of three positive
        integers and a positive class count.
    """
    path = dataset_path(workdir)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no {DATASET_FILE} in {workdir} (made by an older train.py?); pass the data's image "
            f"shape and class count: vscjax.load(workdir, image_shape=(28, 28, 1), num_classes=10)")
    info = _read_json(path, "the data's name, image_shape and num_classes")
    shape, classes = info.get("image_shape"), info.get("num_classes")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(_is_positive_int(n) for n in shape) or not _is_positive_int(classes)):
        raise WorkdirFileError(f"{path}: image_shape must be three positive integers and "
                               f"num_classes a positive integer, got {shape!r} and {classes!r}")
    return info


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``metrics.jsonl`` in the order written.

    The last line is left out if a kill cut it (it does not parse); every other line must be
    a JSON object with an integer ``step``.

    Raises:
      WorkdirFileError: a line before the last is not such a record (naming the line).
    """
    path = metrics_path(workdir)
    with open(path) as f:
        lines = f.read().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            if number == len(lines):  # no newline after it: the last line, cut by a kill
                continue
            raise WorkdirFileError(f"{path} line {number} is not JSON ({err}); repair or delete "
                                   "that line") from None
        if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
            raise WorkdirFileError(f"{path} line {number} is not a record with an integer "
                                   "step; repair or delete that line")
        records.append(record)
    return records


def write_summary(workdir: str, summary: dict) -> None:
    """Write the end-of-run ``summary.json``."""
    write_json_atomic(summary_path(workdir), summary, indent=2)


def write_results(workdir: str, split: str, results: dict) -> str:
    """Write the evaluation of ``split`` to :func:`results_path`; returns that path.

    Nested dicts are indented, and each list (a matrix: each of its rows) stands on one line.
    """
    path = results_path(workdir, split)
    write_text_atomic(path, _matrix_json(results) + "\n")
    return path


def _matrix_json(value, indent: int = 0) -> str:
    """JSON with nested dicts indented and each list (a matrix: each row) on one line."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_matrix_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value and isinstance(value[0], list):
        return "[\n" + ",\n".join(inner + json.dumps(row) for row in value) + f"\n{pad}]"
    return json.dumps(value)
