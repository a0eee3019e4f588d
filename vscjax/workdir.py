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

Every other module asks this one for a path instead of spelling a name. Every JSON file is
written whole: into a temporary file in the same folder, then renamed over the old one
(``os.replace``), so that a kill or a reader never meets half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import ml_collections

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


# ----------------------------------------------------------------------------- writing whole files


def write_text_atomic(path: str, text: str) -> None:
    """Replace the file ``path`` by ``text`` at once: written to ``<path>.tmp`` in the same
    folder, then renamed over ``path``. If the write fails, ``path`` keeps its old contents
    and the temporary file is removed.
    """
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, value, *, indent: int | None = None) -> None:
    """Replace the file ``path`` by ``value`` as JSON (:func:`write_text_atomic`).

    Args:
      path: the file.
      value: anything ``json.dumps`` takes.
      indent: ``json.dumps``'s indent (None: one line).
    """
    write_text_atomic(path, json.dumps(value, indent=indent))


# ----------------------------------------------------------------------------- the files


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Record ``config`` as the config the workdir's run trains with (the folder is made)."""
    os.makedirs(workdir, exist_ok=True)
    write_text_atomic(config_path(workdir), config.to_json(indent=2))


def saved_config(workdir: str) -> dict | None:
    """The workdir's ``config.json`` as a dict of dicts, or None if there is none."""
    path = config_path(workdir)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (keys added since then keep their defaults).

    Raises:
      FileNotFoundError: the workdir has no ``config.json``.
    """
    saved = saved_config(workdir)
    if saved is None:
        raise FileNotFoundError(f"no {CONFIG_FILE} in {workdir} (is it a train.py workdir?)")
    return from_saved(saved)


def write_dataset_info(workdir: str, name: str, image_shape: Sequence[int], num_classes: int) -> None:
    """Record in ``dataset.json`` what a model of this workdir was built for."""
    write_json_atomic(dataset_path(workdir),
                      {"name": name, "image_shape": list(image_shape), "num_classes": num_classes})


def read_dataset_info(workdir: str) -> dict:
    """``dataset.json``: name, image_shape and num_classes of the model's data.

    Raises:
      FileNotFoundError: the workdir has no ``dataset.json`` (made by an older train.py).
    """
    path = dataset_path(workdir)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no {DATASET_FILE} in {workdir} (made by an older train.py?); pass the data's image "
            f"shape and class count: vscjax.load(workdir, image_shape=(28, 28, 1), num_classes=10)")
    with open(path) as f:
        return json.load(f)


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``metrics.jsonl`` in the order written; a line cut by a kill is left out."""
    records = []
    with open(metrics_path(workdir)) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut by a kill (or an empty one)
                continue
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
