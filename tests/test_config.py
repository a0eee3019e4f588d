"""The config schema: one table of what every key may hold, and config files that fail."""

import glob
import math
import os

import pytest

from helpers import REPO_ROOT, load_config
from vscjax import config as cfg
from vscjax.config import ConfigError


def _set(config, key, value):
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    with node.ignore_type():
        node[leaf] = value


def test_every_key_of_the_schema_has_a_rule_and_every_rule_a_key():
    """A key added to base_config() without a rule in config.RULES fails here."""
    assert set(cfg.flatten(cfg.base_config())) == set(cfg.RULES)


def _bad_values(rule: cfg.Rule) -> list:
    """Values ``rule`` must refuse: of another type, out of its range, not finite."""
    if rule.kind == "flag":
        return ["yes", 1]
    if rule.kind in ("text", "choice", "url"):
        return [3] + (["nonsense"] if rule.kind == "choice" else []) + (
            ["ftp://host"] if rule.kind == "url" else []) + ([""] if rule.nonempty else [])
    if rule.kind == "sizes":
        return [(32, "a"), (0,), (1.5,), 32]
    below = [rule.low - 1] if rule.low is not None else []
    above = [rule.high + 1] if rule.high is not None else []
    edges = ([rule.low] if rule.open_low else []) + ([rule.high] if rule.open_high else [])
    # (ml_collections itself stores True in a float field as 1.0, a valid number)
    kinds = [1.5, True] if rule.kind == "integer" else [math.nan, math.inf, -math.inf]
    return below + above + edges + kinds + ["1"]


@pytest.mark.parametrize("key", sorted(cfg.RULES))
def test_every_key_refuses_values_of_another_type_or_outside_its_range(key):
    """NaN, infinities, out-of-range numbers, floats for integers, strings and bools: each is
    named in one line with its key (a key whose check did nothing would pass them)."""
    for value in _bad_values(cfg.RULES[key]):
        config = cfg.base_config()
        _set(config, key, value)
        with pytest.raises(ConfigError) as raised:
            cfg.validate(config, 8)
        assert str(raised.value).startswith(f"config key {key}: must "), (value, str(raised.value))


@pytest.mark.parametrize("key, value, words", [
    ("optimizer.learning_rate", math.nan, "must be a finite number > 0, got nan"),
    ("train.eval_every", -7, "must be an integer >= 0, got -7"),
    ("model.hidden", (32, "a"), "must be a tuple whose every size is a positive integer, got (32, 'a')"),
    ("model.num_pseudo_inputs", 0, "must be a positive integer, got 0"),
    ("optimizer.b2", 1.0, "must lie in [0, 1), got 1.0"),
    ("objective.warmup.start", 2.0, "must lie in [0, 1], got 2.0"),
    ("seed", -1, "must be an integer in [0, 9223372036854775807], got -1"),
])
def test_values_once_accepted_by_mistake_are_refused(key, value, words):
    """Each of these once passed validation and failed later: a NaN learning rate trained 40
    steps of NaN checkpoints, eval_every=-7 evaluated every 7 steps, the others raised deep
    inside the model."""
    config = load_config("tiny")
    _set(config, key, value)
    with pytest.raises(ConfigError) as raised:
        cfg.validate(config, 1)
    assert str(raised.value) == f"config key {key}: {words}"


def test_conditions_across_keys():
    config = cfg.base_config()
    config.objective.c = cfg.schedule("linear", 10.0, start=1.0, begin_step=50, end_step=10)
    with pytest.raises(ConfigError, match="objective.c: end_step 10 is before begin_step 50"):
        cfg.validate(config, 8)
    config = cfg.base_config()
    config.objective.beta = cfg.schedule("exponential", 1.0, start=0.0, end_step=10)
    with pytest.raises(ConfigError, match="objective.beta: an exponential schedule needs start > 0"):
        cfg.validate(config, 8)
    config = cfg.base_config()
    config.model.prior, config.objective.align_mode = "gaussian", "centroid"
    with pytest.raises(ConfigError, match="objective.align_mode: the alignment loss needs spikes"):
        cfg.validate(config, 8)
    config = cfg.base_config()
    config.mesh.latent = 3
    with pytest.raises(ConfigError, match="mesh.latent: 3 does not divide model.latent_dim 200"):
        cfg.validate(config, 8)


def test_a_missing_or_unknown_key_is_named():
    config = cfg.base_config()
    del config.train["plots"]
    with pytest.raises(ConfigError, match="config key train.plots: is missing"):
        cfg.validate(config, 8)
    config = cfg.base_config()
    config.train.plotz = True
    with pytest.raises(ConfigError, match="config key train.plotz: is not a config key"):
        cfg.validate(config, 8)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.py"))))
def test_every_shipped_config_passes(path):
    cfg.validate(cfg.load_file(path), 8)


@pytest.mark.parametrize("source, words", [
    ("def get_config(:\n", "line 1: SyntaxError: invalid syntax"),
    ("x = 1\n", "has no get_config() function"),
    ("def get_config():\n    return 3\n", "get_config() returned 3 (a int), not an ml_collections.ConfigDict"),
    ("import math\n\ndef get_config():\n    return math.sqrt(-1)\n", "line 4: ValueError: math domain error"),
    ("raise RuntimeError('boom')\n", "line 1: RuntimeError: boom"),
])
def test_a_config_file_that_fails_is_named_with_its_line(tmp_path, source, words):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(ConfigError) as raised:
        cfg.load_file(str(path))
    assert str(raised.value).startswith(f"config file {path}") and words in str(raised.value)
    assert "\n" not in str(raised.value)
