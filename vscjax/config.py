"""The configuration schema: every key with its default, validation, and resume compatibility.

Config files in ``configs/`` start from :func:`base_config` and change what they need; the
returned ``ConfigDict`` is locked, so a misspelt key (in a file or a ``--config.x=y``
override) fails at once, and :func:`validate` rejects impossible values with a message that
names the key. What every key may hold (type and range, NaN and infinities refused) is written
once, in :data:`RULES`; a key added to the schema without a rule fails the tests.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import numbers
import os
import urllib.parse

import ml_collections

from vscjax import alignment, shapes, spike_slab
from vscjax.data import SOURCES
from vscjax.models import ARCHITECTURES, CLASS_OFFSETS, LIKELIHOODS, PRIORS
from vscjax.objective import REGULARISERS, SCHEDULE_KINDS

ALIGN_MODES = ("off",) + alignment.MODES
NONFINITE_POLICIES = ("skip", "stop")
PLACEMENTS = ("device", "host")
LR_SCHEDULES = ("constant", "cosine")
MIRROR_SCHEMES = ("https", "http", "file")
DTYPES = ("float32", "bfloat16")
# Keys whose change makes a checkpoint unusable: resuming with a different value is refused.
STATE_DEFINING_PREFIXES = ("model.", "data.source", "data.name", "optimizer.")


class ConfigError(ValueError):
    """A config key that does not exist or holds an impossible value."""


def schedule(kind: str = "constant", value: float = 0.0, *, start: float | None = None,
             begin_step: int = 0, end_step=0) -> ml_collections.ConfigDict:
    """A schedule spec (see ``objective.schedule_value``); ``start`` defaults to ``value``.

    ``end_step`` is a step, or :func:`run_end` of the config: then the schedule ends with the
    run, however many steps ``train.num_steps`` (or its override) asks for.
    """
    if not isinstance(end_step, ml_collections.FieldReference):
        end_step = int(end_step)
    return ml_collections.ConfigDict(dict(
        kind=kind, value=float(value), start=float(value if start is None else start),
        begin_step=int(begin_step), end_step=end_step))


def run_end(config: ml_collections.ConfigDict) -> ml_collections.FieldReference:
    """``train.num_steps`` of ``config`` as a one-way reference, for a schedule's ``end_step``.

    The schedule follows a later ``--config.train.num_steps=N``; setting its ``end_step``
    replaces the reference and leaves ``train.num_steps`` alone.
    """
    return config.train.get_oneway_ref("num_steps")


def base_config() -> ml_collections.ConfigDict:
    """Every key of a vscjax config with its default (plain VSC, fixed prior, L=200)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(
        source="digits",  # digits (embedded), idx (IDX files), tfds, shapes (synthetic), npz or folder
        # the data set's name: folder under $VSCJAX_DATA_DIR, TFDS name, or shapes grid (shapes-<n>)
        name="digits",
        # the IDX folder (or TFDS data_dir; "" -> <$VSCJAX_DATA_DIR or ~/.cache/vscjax>/<name>), or
        # your own data: the .npz file (npz) or the folder of class folders (folder)
        dir="",
        mirror="",  # base URL MNIST / Fashion-MNIST download from when missing; "" = canonical
        balanced=False,  # class-balanced batches: B / C samples of every class
        prefetch=2,  # batches placed on the devices ahead of the step (host feeding)
        placement="device",  # training set on every device (batches gathered there), or "host"
        device_budget_mib=1024,  # most MiB per device for the resident set; above it: host feeding
    ))
    c.model = ml_collections.ConfigDict(dict(
        architecture="mlp", hidden=(400,), conv_channels=32, latent_dim=200,
        likelihood="bernoulli",
        prior="fixed",  # fixed (alpha), class_mask (learned per class), pseudo_inputs, gaussian (VAE)
        num_pseudo_inputs=10, pseudo_sharpness=10.0,
        class_offsets="signed",  # class-mask prior: signed (free rows) or nonnegative offsets
        dtype="float32",
    ))
    c.objective = ml_collections.ConfigDict(dict(
        alpha=0.01,  # prior spike probability
        # Spike mask of the training sample (spike_slab.MASKS). Straight-through trains on the
        # hard spike, so nothing leaks; c then only shapes the spike gradient: c=10 gave the best
        # validation bound on MNIST and on the digits (reports/sweeps/). For mask="relaxed" use
        # c >= 400.
        mask="straight_through",
        c=schedule("constant", 10.0),  # sharpness of the relaxed spike
        beta=schedule("constant", 1.0),  # KL weight
        warmup=schedule("constant", 1.0),  # lambda of the slab warm-up (1 = none)
        align_weight=schedule("constant", 0.0),  # lambda_align
        align_mode="off",  # off, pairwise or centroid
        align_reduce_dims="sum",  # JSD summed over dimensions (the paper), or "mean" (sum / L)
        sparsity_weight=1.0,  # weight of the learned priors' sparsity term (a regulariser)
        class_prior_penalty=0.0,  # weight of sum_j offset[y, j]^2 (class-mask prior; regulariser)
        partial_sharing=0.0,  # weight of objective.partial_sharing (class-mask prior; regulariser)
        class_exclusivity=0.0,  # weight of objective.class_exclusivity (class-mask prior; regulariser)
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-3,
        lr_schedule="constant",  # constant, or cosine decay to 0 at train.num_steps
        b1=0.9, b2=0.999,
        grad_clip_norm=0.0,  # 0 = no clipping
    ))
    c.mesh = ml_collections.ConfigDict(dict(
        # Devices along the latent axis: the L-sized parameters, their Adam moments and every
        # [B, L] activation are split over them (the rest over the batch); 1 = data parallel.
        latent=1,
    ))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=128, num_steps=10_000, log_every=100, eval_every=0,  # 0 = at the end only
        checkpoint_every=1000, max_to_keep=3, eval_batch_size=1000,
        nonfinite="skip",  # skip the update of a non-finite step, or stop the run
        steps_per_call=1,  # K steps per call of the jitted step (lax.scan); 1 call per step at 1
        plots=True,
        profile_steps=0,  # steps traced with jax.profiler into <workdir>/profile; 0 = none
        profile_start=10,  # the first step traced (after compilation and warm-up)
    ))
    return c


def line_of_failure(path: str, err: BaseException) -> int | None:
    """The line of the file ``path`` where ``err`` arose: a syntax error's line in it, or the
    deepest frame of the traceback that runs its code; None if ``err`` did not arise in it."""
    real = os.path.realpath(path)
    if isinstance(err, SyntaxError):
        return err.lineno if err.filename and os.path.realpath(err.filename) == real else None
    line, tb = None, err.__traceback__
    while tb is not None:
        if os.path.realpath(tb.tb_frame.f_code.co_filename) == real:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def describe_file_failure(path: str, err: BaseException) -> str:
    """One line for a config file whose code failed: the file, the line and the error.

    Args:
      path: the config file.
      err: what its import or its ``get_config()`` raised.
    """
    line = line_of_failure(path, err)
    where = f"config file {path}" + ("" if line is None else f" line {line}")
    message = err.msg if isinstance(err, SyntaxError) else (str(err).splitlines() or [""])[0]
    return f"{where}: {type(err).__name__}: {message}"


def load_file(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file, with dotted-key ``overrides`` ({"train.num_steps": 5}).

    ``path`` may end with ``:ARG`` (``configs/large_latent.py:1048576``): the file's
    ``get_config(ARG)`` is called with that string, as ``train.py --config path:ARG`` does.

    Raises:
      ConfigError: the file is missing, its code fails (naming the line), it has no
        ``get_config`` or that returns something other than a ``ConfigDict``, or an override
        names a key that does not exist or gives it a value of another type.
    """
    argument = None
    if not os.path.exists(path) and ":" in os.path.basename(path):
        path, argument = path.rsplit(":", 1)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"vscjax_config_{name}", path)
    if spec is None or not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not callable(getattr(module, "get_config", None)):
            raise ConfigError(f"config file {path} has no get_config() function")
        config = module.get_config() if argument is None else module.get_config(argument)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001  the file's own code failed: name it, and the line
        raise ConfigError(describe_file_failure(path, err)) from None
    check_is_config(config, f"config file {path}: get_config()")
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = config
        try:
            for part in parents:
                node = node[part]
            node[leaf]  # noqa: B018  (must exist: no new keys)
        except (KeyError, AttributeError, TypeError):
            raise ConfigError(f"config key {dotted} does not exist") from None
        try:
            with node.unlocked():
                node[leaf] = value
        except TypeError as err:
            raise ConfigError(f"config key {dotted}: {err}") from None
    return config


def check_is_config(config, source: str) -> None:
    """Raise ``ConfigError`` unless ``config`` is an ``ml_collections.ConfigDict``.

    Args:
      config: what a config file (or a caller) gave.
      source: who gave it, for the message (``config file X: get_config()``).
    """
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{source} returned {config!r:.60} (a {type(config).__name__}), not an "
                          "ml_collections.ConfigDict (start from vscjax.config.base_config())")


# ----------------------------------------------------------------------------- the table of keys


INT32_MAX = 2**31 - 1  # steps and sizes are int32 on the devices


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one config key may hold: its type and, for numbers, the range.

    Attributes:
      kind: "integer", "real" (an int or a float, finite), "flag" (a bool), "text" (a str),
        "choice" (one of ``choices``), "sizes" (a tuple of integers in range) or "url" (""
        or a URL with a scheme of ``choices``).
      low, high: the range of a number (or of each size); None: unbounded.
      open_low, open_high: the range excludes ``low`` / ``high``.
      choices: the values of a choice, the schemes of a URL.
      nonempty: a text must not be "".
    """

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple = ()
    nonempty: bool = False

    def problem(self, value) -> str | None:
        """None if ``value`` is allowed, else what it must be ("must be ..., got ...")."""
        if self.kind == "flag":
            ok = isinstance(value, bool)
        elif self.kind == "text":
            ok = isinstance(value, str) and (value != "" or not self.nonempty)
        elif self.kind == "choice":
            ok = isinstance(value, str) and value in self.choices
        elif self.kind == "url":
            ok = isinstance(value, str) and (
                value == "" or urllib.parse.urlparse(value).scheme in self.choices)
        elif self.kind == "sizes":
            ok = isinstance(value, (tuple, list)) and all(self._in_range(v) for v in value)
        else:
            ok = self._in_range(value)
        return None if ok else f"must {self.describe()}, got {value!r}"

    def _in_range(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind in ("integer", "sizes") and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.open_high and value == self.high))

    def _integer_words(self) -> str:
        """"a positive integer", "an integer >= 0" or "an integer in [low, high]"."""
        if self.high != INT32_MAX:
            return f"an integer in [{self.low}, {self.high}]"
        return "a positive integer" if self.low == 1 else f"an integer >= {self.low}"

    def describe(self) -> str:
        """What a value must be, as words after "must" ("be a positive integer")."""
        if self.kind == "flag":
            return "be True or False"
        if self.kind == "text":
            return "be a non-empty string" if self.nonempty else "be a string"
        if self.kind == "choice":
            return f"be one of {self.choices}"
        if self.kind == "url":
            return f"be \"\" or a URL starting with one of {', '.join(s + '://' for s in self.choices)}"
        if self.kind == "sizes":
            return f"be a tuple whose every size is {self._integer_words()}"
        if self.kind == "integer":
            return f"be {self._integer_words()}"
        if self.low is not None and self.high is not None:
            return (f"lie in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.open_high else ']'}")
        return f"be a finite number {'>' if self.open_low else '>='} {self.low:g}"


def integer(low: int, high: int = INT32_MAX) -> Rule:
    """An integer in [low, high]."""
    return Rule("integer", low, high)


def real(low: float, high: float | None = None, *, open_low: bool = False,
         open_high: bool = False) -> Rule:
    """A finite number in the range (an int is a number too)."""
    return Rule("real", low, high, open_low, open_high)


def choice(options) -> Rule:
    """One of ``options`` (strings)."""
    return Rule("choice", choices=tuple(options))


def _schedule(key: str, values: Rule) -> dict[str, Rule]:
    """The rules of the schedule at ``key`` (``schedule``'s fields), its values in ``values``."""
    return {f"{key}.kind": choice(SCHEDULE_KINDS), f"{key}.value": values, f"{key}.start": values,
            f"{key}.begin_step": integer(0), f"{key}.end_step": integer(0)}


# Every key of base_config(), with what it may hold (tests/test_config.py checks that none is
# missing). Cross-key conditions (devices, schedules' steps, the alignment's prior) follow in
# validate_values and validate.
RULES: dict[str, Rule] = {
    "seed": integer(0, 2**63 - 1),
    "data.source": choice(SOURCES),
    "data.name": Rule("text", nonempty=True),
    "data.dir": Rule("text"),
    "data.mirror": Rule("url", choices=MIRROR_SCHEMES),
    "data.balanced": Rule("flag"),
    "data.prefetch": integer(1),
    "data.placement": choice(PLACEMENTS),
    "data.device_budget_mib": real(0),
    "model.architecture": choice(ARCHITECTURES),
    "model.hidden": Rule("sizes", 1, INT32_MAX),
    "model.conv_channels": integer(1),
    "model.latent_dim": integer(1),
    "model.likelihood": choice(LIKELIHOODS),
    "model.prior": choice(PRIORS),
    "model.num_pseudo_inputs": integer(1),
    "model.pseudo_sharpness": real(0, open_low=True),
    "model.class_offsets": choice(CLASS_OFFSETS),
    "model.dtype": choice(DTYPES),
    "objective.alpha": real(0, 1, open_low=True, open_high=True),
    "objective.mask": choice(spike_slab.MASKS),
    **_schedule("objective.c", real(0, open_low=True)),  # the spike sharpness
    **_schedule("objective.beta", real(0)),
    **_schedule("objective.warmup", real(0, 1)),  # lambda of the slab warm-up
    **_schedule("objective.align_weight", real(0)),
    "objective.align_mode": choice(ALIGN_MODES),
    "objective.align_reduce_dims": choice(alignment.REDUCTIONS),
    **{f"objective.{key}": real(0) for key in REGULARISERS.values()},
    "optimizer.learning_rate": real(0, open_low=True),
    "optimizer.lr_schedule": choice(LR_SCHEDULES),
    "optimizer.b1": real(0, 1, open_high=True),
    "optimizer.b2": real(0, 1, open_high=True),
    "optimizer.grad_clip_norm": real(0),
    "mesh.latent": integer(1),
    "train.batch_size": integer(1),
    "train.num_steps": integer(1),
    "train.log_every": integer(1),
    "train.eval_every": integer(0),  # 0: at the end only
    "train.checkpoint_every": integer(1),
    "train.max_to_keep": integer(1),
    "train.eval_batch_size": integer(1),
    "train.nonfinite": choice(NONFINITE_POLICIES),
    "train.steps_per_call": integer(1),
    "train.plots": Rule("flag"),
    "train.profile_steps": integer(0),
    "train.profile_start": integer(0),
}


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"config key {key}: {message}")


def flatten(config) -> dict:
    """{"train.batch_size": 128, ...}: every leaf of a config (or of a dict of dicts) by its
    dotted key; tuples stay tuples."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            flat.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            flat[key] = value
    return flat


def validate_values(config: ml_collections.ConfigDict) -> None:
    """Raise ``ConfigError`` naming the first key of ``config`` that is missing, unknown or
    holds a value :data:`RULES` or a cross-key condition refuses (NaN and infinities
    included); what does not depend on the devices a run has."""
    check_is_config(config, "the config")
    flat = flatten(config)
    for key, rule in RULES.items():
        if key not in flat:
            _fail(key, "is missing (a config starts from vscjax.config.base_config())")
        problem = rule.problem(flat[key])
        if problem:
            _fail(key, problem)
    unknown = sorted(set(flat) - set(RULES))
    if unknown:
        _fail(unknown[0], "is not a config key")
    o = config.objective
    for name in ("c", "beta", "warmup", "align_weight"):
        spec = o[name]
        if spec.kind != "constant" and spec.end_step < spec.begin_step:
            _fail(f"objective.{name}", f"end_step {spec.end_step} is before begin_step {spec.begin_step}")
        if spec.kind == "exponential" and (spec.start <= 0 or spec.value <= 0):
            _fail(f"objective.{name}", "an exponential schedule needs start > 0 and value > 0")
    if o.align_mode != "off" and config.model.prior == "gaussian":
        _fail("objective.align_mode", "the alignment loss needs spikes; model.prior is gaussian")
    if config.data.source == "shapes":
        try:
            shapes.grid_from_name(config.data.name)
        except ValueError as err:
            _fail("data.name", str(err))
    if config.model.latent_dim % config.mesh.latent:
        _fail("mesh.latent", f"{config.mesh.latent} does not divide model.latent_dim "
                             f"{config.model.latent_dim}")


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raise ``ConfigError`` naming the first impossible value in ``config`` for a run on
    ``num_devices`` devices: :func:`validate_values`, then the split over the devices."""
    validate_values(config)
    m, t = config.model, config.train
    if num_devices % config.mesh.latent:
        _fail("mesh.latent", f"{config.mesh.latent} does not divide the {num_devices} devices")
    data_shards = num_devices // config.mesh.latent
    for key in ("batch_size", "eval_batch_size"):
        if t[key] % data_shards:
            _fail(f"train.{key}", f"{t[key]} does not split over {data_shards} devices; use a "
                                  f"multiple of {data_shards}"
                                  + _latent_hint(t[key], num_devices, config.mesh.latent, m.latent_dim))


def _latent_hint(batch: int, num_devices: int, latent: int, latent_dim) -> str:
    """", or --config.mesh.latent=M" for the smallest M > latent that lets ``batch`` split."""
    for m in range(latent + 1, num_devices + 1):
        if num_devices % m == 0 and batch % (num_devices // m) == 0 and latent_dim % m == 0:
            return f", or split the latent dimension with --config.mesh.latent={m}"
    return ""


def check_resume_compatible(saved: dict | None, config: ml_collections.ConfigDict) -> None:
    """Refuse to resume a checkpoint written under a config whose state-defining keys differ.

    ``train.num_steps`` counts as state-defining under a cosine learning-rate schedule, whose
    every value depends on it.

    Args:
      saved: the config the workdir was trained with, as saved (``vscjax.workdir.saved_config``);
        None for a new workdir, which any config may use.
      config: the config of this run.

    Raises:
      ConfigError: naming the first key that differs, with both values.
    """
    if saved is None:
        return
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(saved).items()}
    current = {k: list(v) if isinstance(v, tuple) else v
               for k, v in flatten(json.loads(config.to_json())).items()}
    cosine = current.get("optimizer.lr_schedule") == "cosine"
    for key in sorted(set(saved) | set(current)):
        defining = key.startswith(STATE_DEFINING_PREFIXES) or (cosine and key == "train.num_steps")
        if defining and saved.get(key) != current.get(key):
            why = " (the cosine learning-rate schedule decays over it)" if key == "train.num_steps" else ""
            raise ConfigError(
                f"config key {key}: the checkpoint in this workdir was made with "
                f"{saved.get(key)!r}, this run asks for {current.get(key)!r}{why}; use another "
                "--workdir or the same value")


def from_saved(saved: dict, *, source: str = "the saved config") -> ml_collections.ConfigDict:
    """The config of a saved ``config.to_json()`` (a dict of dicts): keys added to the schema
    since it was saved keep their defaults; lists become tuples.

    Args:
      saved: the saved config.
      source: where it was read from, for the messages (``<workdir>/config.json``).

    Raises:
      ConfigError: naming ``source`` and the key: a key the schema does not have, a value of
        another type, or one :func:`validate_values` refuses (a hand-edited file).
    """
    config = base_config()

    def merge(node, values, prefix):
        for key, value in values.items():
            if key not in node:
                raise ConfigError(f"{source}: {prefix}{key} is not a config key of this vscjax")
            if isinstance(node[key], ml_collections.ConfigDict):
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: config key {prefix}{key} must be a group of keys, "
                                      f"got {value!r}")
                merge(node[key], value, f"{prefix}{key}.")
                continue
            try:
                node[key] = tuple(value) if isinstance(value, list) else value
            except TypeError as err:
                raise ConfigError(f"{source}: config key {prefix}{key}: {err}") from None

    merge(config, saved, "")
    try:
        validate_values(config)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return config
