"""Profiles: a window of training steps traced with jax.profiler into the workdir."""

import glob
import gzip
import json
import os

import jax
import pytest

from helpers import load_config
from vscjax import profiling, train
from vscjax.config import ConfigError, validate


def _traced_steps(workdir) -> list[int]:
    """The steps annotated in the run's one trace (its Perfetto / Chrome JSON)."""
    traces = glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*", "*.trace.json.gz"))
    assert len(traces) == 1, traces
    assert glob.glob(os.path.join(os.path.dirname(traces[0]), "*.xplane.pb"))  # TensorBoard's file
    with gzip.open(traces[0]) as f:
        events = json.load(f)["traceEvents"]
    return sorted(int(e["args"]["step_num"]) for e in events if e.get("name") == "train")


def test_a_tiny_run_traces_its_window_of_steps(tmp_path):
    config = load_config("tiny", train__num_steps=8, train__profile_start=2, train__profile_steps=3)
    train.run(config, str(tmp_path))
    assert _traced_steps(tmp_path) == [2, 3, 4]


def test_no_trace_by_default_or_on_other_processes(tmp_path, monkeypatch):
    train.run(load_config("tiny", train__num_steps=3), str(tmp_path / "default"))
    assert not os.path.exists(tmp_path / "default" / "profile")
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    profiler = profiling.StepProfiler(str(tmp_path / "process1" / "profile"), 0, 2)
    profiler.before_step(0)
    assert not profiler.active and not os.path.exists(tmp_path / "process1" / "profile")


def test_negative_profile_values_are_refused_by_name():
    with pytest.raises(ConfigError, match="train.profile_steps"):
        validate(load_config("tiny", train__profile_steps=-1), 1)
