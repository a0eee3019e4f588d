"""The promise, fuzzed (hypothesis): whatever a user gives, a command ends with status 0 and a
finite result, or with status 1 and one line naming the problem, no traceback, and nothing
saved before changed.

Three properties, each a fixed, seeded set of cases (``derandomize``) so that CI runs the same
ones every time:

* every config key, one at a time, set to a value drawn from outside its rule (NaN, infinities,
  out-of-range numbers, other types) or from small values inside it, trained in-process
  through ``train.run`` (``train.py``'s entry) on a fresh workdir or resumed on a copy of a
  finished one;
* ``python -m vscjax.evaluate``'s flags (``--pairs``, ``--probe-train``, ``--iw-samples``,
  ``--split``), in-process through its ``main``;
* a few ``train.py`` command lines in subprocesses, with overrides as a user types them.

Most cases are refused by validation before any JAX work; the accepted ones train 2 steps of
the tiny config, or evaluate its validation split.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import REPO_ROOT, load_config
from vscjax import config as cfg
from vscjax import evaluate, faults, train
from vscjax.checkpoints import CheckpointMismatchError
from vscjax.data import DataError
from vscjax.lock import WorkdirBusyError
from vscjax.workdir import WorkdirFileError

TINY = os.path.join(REPO_ROOT, "configs", "tiny.py")
# The exceptions train.py turns into its one line (and OSError, through cli.os_error_line).
REFUSALS = (cfg.ConfigError, DataError, CheckpointMismatchError, train.NonFiniteLossError,
            WorkdirBusyError, WorkdirFileError)
# Cases per property: few, so that the suite stays fast (most are refused before any JAX
# work; an accepted config trains 2 steps, a command line starts a process).
CONFIG_CASES, EVALUATE_CASES, COMMAND_LINE_CASES = 25, 40, 2
FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _tiny(**overrides):
    return load_config("tiny", train__num_steps=2, train__log_every=1, **overrides)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-step run of the tiny config."""
    workdir = tmp_path_factory.mktemp("fuzz") / "finished"
    train.run(_tiny(), str(workdir))
    return workdir


def _snapshot(folder) -> dict:
    """Every file's bytes (the lock file aside: a refused run may have taken the free lock)."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name != "train.lock":
                path = os.path.join(root, name)
                files[os.path.relpath(path, folder)] = open(path, "rb").read()
    return files


def _invalid(rule: cfg.Rule):
    """Values outside ``rule``: other types, NaN, infinities, numbers beyond its range."""
    other_types = st.one_of(st.text(max_size=4), st.lists(st.integers(), max_size=2).map(tuple),
                            st.none())
    if rule.kind in ("integer", "real"):
        outside = [st.sampled_from([math.nan, math.inf, -math.inf])]
        if rule.low is not None:
            outside.append(st.integers(max_value=math.ceil(rule.low) - 1))
        if rule.high is not None:
            outside.append(st.integers(min_value=math.floor(rule.high) + 1))
        if rule.kind == "integer":
            outside.append(st.floats(-1e6, 1e6).filter(lambda v: not v.is_integer()))
        return st.one_of(*outside, other_types)
    if rule.kind == "sizes":
        return st.one_of(st.tuples(st.integers(max_value=0)), st.tuples(st.integers(1, 4), st.text(max_size=2)),
                         st.integers(), other_types)
    if rule.kind == "flag":
        return st.one_of(st.integers(), st.text(max_size=4))
    bad_text = {"choice": st.text(max_size=6).filter(lambda v: v not in rule.choices),
                "url": st.sampled_from(["ftp://host/x", "mirror", "s3://bucket"]),
                "text": st.just("") if rule.nonempty else st.nothing()}[rule.kind]
    return st.one_of(bad_text, st.integers(), st.floats(allow_nan=True), st.none())


def _small_valid(rule: cfg.Rule):
    """Values inside ``rule`` that keep a 2-step run of the tiny config cheap."""
    if rule.kind == "integer":
        return st.integers(int(rule.low), int(min(rule.high, rule.low + 3)))
    if rule.kind == "real":
        high = rule.high if rule.high is not None else rule.low + 10.0
        return st.floats(rule.low, high, exclude_min=rule.open_low, exclude_max=rule.open_high)
    if rule.kind == "flag":
        return st.booleans()
    if rule.kind == "choice":
        return st.sampled_from(rule.choices)
    if rule.kind == "sizes":
        return st.lists(st.integers(1, 8), max_size=2).map(tuple)
    if rule.kind == "url":
        return st.sampled_from(["", "file:///nowhere", "https://example.invalid/mnist"])
    return st.text("abcdefgh0123/._-", min_size=1, max_size=8)


@st.composite
def _mutations(draw):
    """(key, value): mostly values a key must refuse, some it accepts."""
    key = draw(st.sampled_from(sorted(cfg.RULES)))
    rule = cfg.RULES[key]
    value = draw(st.one_of(_invalid(rule), _invalid(rule), _small_valid(rule)))
    return key, value


def _assert_finite(summary: dict) -> None:
    numbers = {k: v for k, v in summary.items() if isinstance(v, float)}
    assert numbers and all(math.isfinite(v) for v in numbers.values()), summary


@settings(max_examples=CONFIG_CASES, **FUZZ)
@given(mutation=_mutations(), fresh=st.booleans())
def test_fuzz_config_values(finished, tmp_path_factory, mutation, fresh):
    key, value = mutation
    config = _tiny()
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    with node.ignore_type():
        node[leaf] = value
    workdir = tmp_path_factory.mktemp("case") / "w"
    if not fresh:
        shutil.copytree(finished, workdir)
    before = None if fresh else _snapshot(workdir)
    try:
        summary = train.run(config, str(workdir))
    except REFUSALS as err:
        assert "\n" not in str(err), str(err)
        if fresh:
            assert not (workdir / "checkpoints").exists()
        else:
            assert _snapshot(workdir) == before
    else:
        _assert_finite(summary)


@st.composite
def _evaluate_flags(draw):
    """Each flag inside its range (small: cheap) or outside it (and some not integers)."""
    def flag(name, valid, invalid):
        return [name, str(draw(st.one_of(valid, invalid, st.text("-x1e9", max_size=4))))]
    return (flag("--pairs", st.integers(1, 50), st.one_of(st.integers(max_value=0), st.just(10**16)))
            + flag("--probe-train", st.integers(2, 200), st.integers(max_value=1))
            + flag("--iw-samples", st.integers(0, 2), st.one_of(st.integers(max_value=-1),
                                                               st.just(10**13)))
            + ["--split", draw(st.sampled_from(["validation", "bogus"]))])


@settings(max_examples=EVALUATE_CASES, **FUZZ)
@given(flags=_evaluate_flags())
def test_fuzz_evaluate_flags(finished, tmp_path_factory, flags):
    workdir = tmp_path_factory.mktemp("case") / "w"
    shutil.copytree(finished, workdir)
    before = _snapshot(workdir)
    try:
        evaluate.main(["--workdir", str(workdir), "--no-plots", *flags])
    except SystemExit as exit_:
        message = str(exit_.code)
        assert message.startswith("vscjax.evaluate: ") and "\n" not in message, message
        assert _snapshot(workdir) == before
    else:
        results = json.load(open(workdir / "eval_validation.json"))
        assert math.isfinite(results["elbo"]["exact_neg_elbo"]), results["elbo"]


@settings(max_examples=COMMAND_LINE_CASES, **FUZZ)
@given(key=st.sampled_from(sorted(cfg.RULES)),
       value=st.sampled_from(["nan", "-7", "1e400", "(32,'a')", "abc", "''", "True", "0",
                              "2000000000", "-inf", "[]", "3"]))
def test_fuzz_train_py_command_lines(tmp_path_factory, key, value):
    workdir = tmp_path_factory.mktemp("case") / "w"
    env = {name: v for name, v in os.environ.items() if name != faults.ENV}
    env["XLA_FLAGS"] = ""
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "train.py"), "--config", TINY,
         "--config.train.num_steps=2", f"--config.{key}={value}", "--workdir", str(workdir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if result.returncode == 0:
        _assert_finite(json.load(open(workdir / "summary.json")))
    else:
        assert result.returncode == 1
        lines = [line for line in result.stderr.splitlines() if line.strip() and "step/s" not in line
                 and "s/step" not in line]
        assert len(lines) == 1 and lines[0].startswith("train.py: "), result.stderr[-3000:]
