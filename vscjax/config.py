"""The configuration schema: every key with its default, validation, and resume compatibility.

Config files in ``configs/`` start from :func:`base_config` and change what they need; the
returned ``ConfigDict`` is locked, so a misspelt key (in a file or a ``--config.x=y``
override) fails at once, and :func:`validate` rejects impossible values with a message that
names the key.
"""

from __future__ import annotations

import importlib.util
import json
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


def load_file(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file, with dotted-key ``overrides`` ({"train.num_steps": 5}).

    ``path`` may end with ``:ARG`` (``configs/large_latent.py:1048576``): the file's
    ``get_config(ARG)`` is called with that string, as ``train.py --config path:ARG`` does. A key
    that does not exist raises ``ConfigError`` naming it.
    """
    argument = None
    if not os.path.exists(path) and ":" in os.path.basename(path):
        path, argument = path.rsplit(":", 1)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"vscjax_config_{name}", path)
    if spec is None or not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config() if argument is None else module.get_config(argument)
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = config
        try:
            for part in parents:
                node = node[part]
            node[leaf]  # noqa: B018  (must exist: no new keys)
        except (KeyError, AttributeError):
            raise ConfigError(f"config key {dotted} does not exist") from None
        try:
            with node.unlocked():
                node[leaf] = value
        except TypeError as err:
            raise ConfigError(f"config key {dotted}: {err}") from None
    return config


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"config key {key}: {message}")


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        _fail(key, f"{value!r} is not one of {tuple(choices)}")


def _check_positive_int(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        _fail(key, f"must be a positive integer, got {value!r}")


def _check_schedule(key: str, spec) -> None:
    _check_choice(f"{key}.kind", spec.kind, SCHEDULE_KINDS)
    if spec.kind != "constant" and spec.end_step < spec.begin_step:
        _fail(key, f"end_step {spec.end_step} is before begin_step {spec.begin_step}")
    if spec.kind == "exponential" and (spec.start <= 0 or spec.value <= 0):
        _fail(key, "an exponential schedule needs start > 0 and value > 0")


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raise ``ConfigError`` naming the first impossible value in ``config`` for a run on
    ``num_devices`` devices."""
    m, o, t = config.model, config.objective, config.train
    _check_positive_int("mesh.latent", config.mesh.latent)
    if num_devices % config.mesh.latent:
        _fail("mesh.latent", f"{config.mesh.latent} does not divide the {num_devices} devices")
    if isinstance(m.latent_dim, int) and m.latent_dim % config.mesh.latent:
        _fail("mesh.latent", f"{config.mesh.latent} does not divide model.latent_dim {m.latent_dim}")
    data_shards = num_devices // config.mesh.latent
    _check_choice("data.source", config.data.source, SOURCES)
    if config.data.source == "shapes":
        try:
            shapes.grid_from_name(config.data.name)
        except ValueError as err:
            _fail("data.name", str(err))
    if config.data.mirror and urllib.parse.urlparse(config.data.mirror).scheme not in MIRROR_SCHEMES:
        _fail("data.mirror", f"{config.data.mirror!r} is not a URL starting with one of "
                             f"{', '.join(s + '://' for s in MIRROR_SCHEMES)}")
    if not isinstance(m.latent_dim, int) or m.latent_dim <= 0:
        _fail("model.latent_dim", f"must be a positive integer, got {m.latent_dim!r}")
    if any(h <= 0 for h in m.hidden):
        _fail("model.hidden", f"sizes must be positive, got {tuple(m.hidden)}")
    _check_choice("model.architecture", m.architecture, ARCHITECTURES)
    _check_choice("model.likelihood", m.likelihood, LIKELIHOODS)
    _check_choice("model.prior", m.prior, PRIORS)
    _check_choice("model.class_offsets", m.class_offsets, CLASS_OFFSETS)
    _check_choice("model.dtype", m.dtype, ("float32", "bfloat16"))
    if not 0.0 < o.alpha < 1.0:
        _fail("objective.alpha", f"must lie in (0, 1), got {o.alpha}")
    _check_choice("objective.mask", o.mask, spike_slab.MASKS)
    _check_choice("objective.align_mode", o.align_mode, ALIGN_MODES)
    _check_choice("objective.align_reduce_dims", o.align_reduce_dims, alignment.REDUCTIONS)
    for key in REGULARISERS.values():
        if o[key] < 0:
            _fail(f"objective.{key}", f"must be >= 0, got {o[key]}")
    if o.align_mode != "off" and m.prior == "gaussian":
        _fail("objective.align_mode", "the alignment loss needs spikes; model.prior is gaussian")
    for name in ("c", "beta", "warmup", "align_weight"):
        _check_schedule(f"objective.{name}", o[name])
    if o.c.value <= 0 or o.c.start <= 0:
        _fail("objective.c", "the spike sharpness must be > 0")
    for key in ("batch_size", "eval_batch_size"):
        if t[key] <= 0:
            _fail(f"train.{key}", f"must be positive, got {t[key]}")
        if t[key] % data_shards:
            _fail(f"train.{key}", f"{t[key]} does not split over {data_shards} devices; use a "
                                  f"multiple of {data_shards}"
                                  + _latent_hint(t[key], num_devices, config.mesh.latent, m.latent_dim))
    for key in ("num_steps", "log_every", "checkpoint_every", "max_to_keep"):
        if t[key] <= 0:
            _fail(f"train.{key}", f"must be positive, got {t[key]}")
    for key in ("profile_steps", "profile_start"):
        if t[key] < 0:
            _fail(f"train.{key}", f"must be >= 0, got {t[key]}")
    _check_choice("train.nonfinite", t.nonfinite, NONFINITE_POLICIES)
    _check_positive_int("train.steps_per_call", t.steps_per_call)
    _check_choice("data.placement", config.data.placement, PLACEMENTS)
    if config.data.device_budget_mib < 0:
        _fail("data.device_budget_mib", f"must be >= 0, got {config.data.device_budget_mib}")
    if config.optimizer.learning_rate <= 0:
        _fail("optimizer.learning_rate", "must be positive")
    _check_choice("optimizer.lr_schedule", config.optimizer.lr_schedule, LR_SCHEDULES)


def _latent_hint(batch: int, num_devices: int, latent: int, latent_dim) -> str:
    """", or --config.mesh.latent=M" for the smallest M > latent that lets ``batch`` split."""
    for m in range(latent + 1, num_devices + 1):
        if num_devices % m == 0 and batch % (num_devices // m) == 0 and latent_dim % m == 0:
            return f", or split the latent dimension with --config.mesh.latent={m}"
    return ""


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


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
    saved = _flatten(saved)
    current = _flatten(json.loads(config.to_json()))
    cosine = current.get("optimizer.lr_schedule") == "cosine"
    for key in sorted(set(saved) | set(current)):
        defining = key.startswith(STATE_DEFINING_PREFIXES) or (cosine and key == "train.num_steps")
        if defining and saved.get(key) != current.get(key):
            why = " (the cosine learning-rate schedule decays over it)" if key == "train.num_steps" else ""
            raise ConfigError(
                f"config key {key}: the checkpoint in this workdir was made with "
                f"{saved.get(key)!r}, this run asks for {current.get(key)!r}{why}; use another "
                "--workdir or the same value")


def from_saved(saved: dict) -> ml_collections.ConfigDict:
    """The config of a saved ``config.to_json()`` (a dict of dicts): keys added to the schema
    since it was saved keep their defaults; lists become tuples."""
    config = base_config()

    def merge(node, values):
        for key, value in values.items():
            if isinstance(value, dict):
                merge(node[key], value)
            else:
                node[key] = tuple(value) if isinstance(value, list) else value

    merge(config, saved)
    return config
