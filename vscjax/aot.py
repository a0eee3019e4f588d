"""Before you book a slice: compile the real trainer for a TPU slice on this machine, and say
whether it fits and how fast the chip's own cost model says it runs.

    python -m vscjax.aot --config configs/mnist.py --topology v5e:4x4 [--config.KEY=VALUE ...]
                         [--json PATH] [--instructions 15]

No TPU is needed: libtpu (``pip install -e ".[tpu]"``) describes the slice
(``jax.experimental.topologies``), and XLA's TPU compiler compiles for it here. What is compiled
is exactly what ``train.py`` runs for the config on that slice (``vscjax.program``): the
training call of ``train.steps_per_call`` steps with its feeding (the resident training set
included), the one-step call the loop uses around checkpoints, and the evaluation step, with
the config's mesh over the slice's chips and hosts. Nothing is allocated: shapes come from
``jax.eval_shape``, so a config that needs more than a chip holds is refused before it is
compiled.

Printed, per chip: HBM needed (parameters, optimizer state, resident data, batch inputs,
temporaries, program) against the chip's HBM; the compiled step's FLOPs and bytes accessed
and the compiler's estimated time of one training step; the roofline of those counts
(``max(flops / peak FLOP/s, bytes / HBM bandwidth)``) and of the minimal traffic of a step
(:func:`minimal_bytes`); the predicted samples per second. ``--json`` writes the same figures.
Exit status 1, with one line, when the config does not fit or does not compile.

Where the cost model is blind: the TPU compiler's memory-space assignment joins the slices of
large prefetches with a ``ConcatBitcast`` custom call, which ``cost_analysis()`` prices at
-1 s each (a sentinel for "no estimate"), so the whole step's ``optimal_seconds`` comes out
negative. The estimate reported here adds those seconds back (the calls only reinterpret
memory) and says how many it corrected (:func:`vscjax.hlo_costs.unknown_cost_calls`).
"""

from __future__ import annotations

import os

# Compile only: JAX itself runs on this machine's CPU, libtpu only describes and compiles for
# the slice; several compiles may share the machine (libtpu's lock file would refuse them).
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import ast  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import ml_collections  # noqa: E402

from vscjax import cli, data, evaluation_loop, hlo_costs, provenance, sharding  # noqa: E402
from vscjax.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from vscjax.config import ConfigError, load_file, validate  # noqa: E402
from vscjax.program import DataSpec, TrainProgram, leaf_bytes_per_device  # noqa: E402

GIB = 2**30
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "default.py")


@dataclasses.dataclass(frozen=True)
class Chip:
    """A TPU generation's published per-chip figures."""

    name: str
    peak_flops: float  # bf16 matmul FLOP/s (an f32 matmul at default precision runs on it too)
    hbm_bytes: int
    hbm_bandwidth: float  # bytes/s
    source: str


# Per chip, from each generation's Cloud TPU system-architecture page.
CHIPS = {
    "TPU v4": Chip("v4", 275e12, 32 * GIB, 1200e9, "https://cloud.google.com/tpu/docs/v4"),
    "TPU v5 lite": Chip("v5e", 197e12, 16 * GIB, 819e9, "https://cloud.google.com/tpu/docs/v5e"),
    "TPU v5": Chip("v5p", 459e12, 95 * GIB, 2765e9, "https://cloud.google.com/tpu/docs/v5p"),
    "TPU v6 lite": Chip("v6e", 918e12, 32 * GIB, 1638e9, "https://cloud.google.com/tpu/docs/v6e"),
}
# Chips with two TensorCores run as one device each ("megacore"), as JAX does on them.
MEGACORE = ("v4", "v5p")
# Training sets whose shape is known without reading them: (H, W, C), classes, source images
# before the validation part is held out, distinct pixel values.
KNOWN_SETS = {("idx", "mnist"): ((28, 28, 1), 10, 60_000, 256),
              ("idx", "fashion_mnist"): ((28, 28, 1), 10, 60_000, 256)}


class CompileError(RuntimeError):
    """The config does not fit the slice or does not compile for it (one line says which)."""


# ----------------------------------------------------------------------------- the slice


@contextlib.contextmanager
def _quiet_stderr():
    """Silence what libtpu prints while it starts without a TPU (shown if the start fails)."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except Exception:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-2000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def slice_devices(topology: str) -> list:
    """The devices of a TPU slice described by libtpu, e.g. ``"v5e:4x4"`` (16 chips, 4 hosts).

    Raises:
      CompileError: libtpu is missing or does not know the topology.
    """
    try:
        from jax.experimental import topologies
    except ImportError as err:  # pragma: no cover (part of jax)
        raise CompileError(f"jax.experimental.topologies is unavailable: {err}") from None
    generation = topology.split(":")[0]
    kwargs = {"chip_config_name": "megacore"} if generation in MEGACORE else {}
    try:
        with _quiet_stderr():
            description = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs)
    except Exception as err:  # libtpu raises JaxRuntimeError / RuntimeError with its own text
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "libtpu" in first.lower() or "plugin" in first.lower() or "tpu" not in topology:
            first += ' (is libtpu installed? pip install -e ".[tpu]")'
        raise CompileError(f"topology {topology!r}: {first}") from None
    return list(description.devices)


def chip_of(devices) -> Chip:
    """The published figures of the slice's chip."""
    kind = devices[0].device_kind
    if kind not in CHIPS:
        raise CompileError(f"no published figures for {kind!r}; known: {sorted(CHIPS)}")
    return CHIPS[kind]


# ----------------------------------------------------------------------------- the program


def data_spec(config: ml_collections.ConfigDict) -> tuple[DataSpec, str]:
    """The training data's :class:`DataSpec` and where it came from (a table or the data)."""
    d = config.data
    known = KNOWN_SETS.get((d.source, d.name))
    if known is not None:
        image_shape, classes, images, levels = known
        num_train = len(data.holdout_indices(images)[0])
        return DataSpec(d.name, image_shape, classes, num_train, levels), "the known shape of the data set"
    dataset = data.load(d.source, d.name, "train", data_dir=d.dir, mirror=d.mirror)
    from vscjax import resident

    _, levels = resident.encode_pixels(dataset.images)
    return DataSpec.of(dataset, levels), "the data set as loaded"


def latent_split_for(config: ml_collections.ConfigDict, chips: int) -> int:
    """The config's ``mesh.latent``, or the smallest larger one that lets its training and
    evaluation batches split over the chips left along ``"data"`` (120 over 16 chips: 2)."""
    t, latent_dim = config.train, config.model.latent_dim
    for latent in range(config.mesh.latent, chips + 1):
        data_shards = chips // latent
        if (chips % latent == 0 and latent_dim % latent == 0 and t.batch_size % data_shards == 0
                and t.eval_batch_size % data_shards == 0):
            return latent
    return config.mesh.latent


def minimal_bytes(program: TrainProgram) -> dict:
    """What one training step must read and write per chip, each byte once, in bytes.

    Counted: the parameters read by the forward and again by the backward pass (2P); the
    gradient written (P) and all-reduced over the data axis (read and written, 2P); Adam reading
    gradient, both moments and the parameter (4P) and writing the moments and the parameter
    (3P): 12P in all. The batch read once (images as float32 pixels, labels). Of the [B, L]
    arrays: the three encoder heads, the sample z, its gradient and the heads' three gradients
    each written once and read once (16 passes of B x L float32); the decoder's output logits
    and their gradient, written and read once ([B, D], 4 passes). B and L are a chip's share:
    the batch over ``"data"``, the latent dimension over ``"latent"``.
    """
    state = program.abstract_state()
    params = leaf_bytes_per_device(state.params)
    batch = program.config.train.batch_size // sharding.data_size(program.mesh)
    latent = program.config.model.latent_dim // program.config.mesh.latent
    pixels = math.prod(program.data.image_shape)
    parts = {"parameters": 12 * params,
             "batch": batch * (pixels * 4 + 4),
             "latent_activations": 16 * batch * latent * 4,
             "output_activations": 4 * batch * pixels * 4}
    return {**parts, "total": sum(parts.values())}


def _compile(lowered, what: str):
    try:
        return lowered.compile()
    except Exception as err:  # XLA's errors come as JaxRuntimeError with the compiler's text
        text = str(err).strip().replace("\n", " ")
        if "RESOURCE_EXHAUSTED" in text:  # the compiler found no room for the temporaries
            raise CompileError(f"{what} does not fit: {text[:400]}") from None
        raise CompileError(f"{what} does not compile: {text[:400]}") from None


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    return {"arguments": int(m.argument_size_in_bytes), "outputs": int(m.output_size_in_bytes),
            "aliased": int(m.alias_size_in_bytes), "temporaries": int(m.temp_size_in_bytes),
            "program": int(m.generated_code_size_in_bytes)}


def _peak(memory: dict) -> int:
    """Bytes a chip holds while a program runs: its arguments, the outputs that do not reuse a
    donated argument's buffer, its temporaries and its code."""
    return (memory["arguments"] + memory["outputs"] - memory["aliased"] + memory["temporaries"]
            + memory["program"])


def analyse(config: ml_collections.ConfigDict, topology: str, *, instructions: int = 15,
            log=print) -> dict:
    """Compile ``config``'s trainer for ``topology`` and return its figures (see the module).

    Args:
      config: a training config.
      topology: a TPU topology name such as ``"v5e:4x4"``.
      instructions: how many of the step's costliest instructions to list.
      log: where progress lines go.

    Returns:
      dict of the figures; ``fits`` False when the HBM needed exceeds the chip's.

    Raises:
      CompileError: the slice is unknown, the state alone does not fit, or XLA refuses.
    """
    devices = slice_devices(topology)
    chip = chip_of(devices)
    hosts = len({d.process_index for d in devices})
    try:
        validate(config, len(devices))
    except ConfigError as err:
        raise CompileError(str(err)) from None
    mesh = sharding.make_mesh(config.mesh.latent, devices)
    spec, spec_source = data_spec(config)
    program = TrainProgram(config, spec, mesh)
    state = program.abstract_state()
    placement, resident_bytes = program.feed_placement()
    k = config.train.steps_per_call
    parts = {"parameters": leaf_bytes_per_device(state.params),
             "optimizer_state": leaf_bytes_per_device(state.opt_state),
             "resident_data": resident_bytes}
    held = sum(parts.values())
    if held > chip.hbm_bytes:
        raise CompileError(
            f"does not fit: parameters, optimizer state and resident data alone need "
            f"{held / GIB:.2f} GiB per chip, {(held - chip.hbm_bytes) / GIB:.2f} GiB more than "
            f"a {chip.name} chip's {chip.hbm_bytes / GIB:.0f} GiB")
    key = program.abstract_key()
    calls = {}
    for length in sorted({1, k}):
        inputs, resident_set = program.abstract_call_inputs(length)
        started = time.perf_counter()
        calls[length] = _compile(program.train_steps.lower(state, inputs, resident_set, key),
                                 f"the {length}-step training call")
        log(f"compiled the {length}-step training call for {topology} in "
            f"{time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    eval_args = program.abstract_eval_inputs()
    evaluation = _compile(evaluation_loop.batch_eval_terms.lower(
        *eval_args, graphdef=program.graphdef, seed=config.seed, alpha=config.objective.alpha),
        "the evaluation step")
    log(f"compiled the evaluation step in {time.perf_counter() - started:.0f} s")

    train_memory = _memory(calls[k])
    inputs, _ = program.abstract_call_inputs(k)
    parts["batch_inputs"] = leaf_bytes_per_device(inputs)
    parts["temporaries"] = train_memory["temporaries"]
    parts["program"] = train_memory["program"]
    parts["unaliased_outputs"] = train_memory["outputs"] - train_memory["aliased"]
    train_peak = _peak(train_memory)
    # During an evaluation the train state and the resident set stay on the chip beside it.
    eval_memory = _memory(evaluation)
    eval_peak = _peak(eval_memory) + parts["optimizer_state"] + resident_bytes
    needed = max(train_peak, eval_peak)

    one_step = calls[1]
    text = one_step.as_text()
    cost = one_step.cost_analysis()
    unknown = hlo_costs.unknown_cost_calls(text)
    estimated = cost.get("optimal_seconds", float("nan")) + len(unknown)
    flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    table = hlo_costs.rows(text)
    roofline = max(flops / chip.peak_flops, accessed / chip.hbm_bandwidth)
    minimal = minimal_bytes(program)
    matmul_flops = hlo_costs.totals(table)["flops"]
    minimal_seconds = max(matmul_flops / chip.peak_flops, minimal["total"] / chip.hbm_bandwidth)
    batch = config.train.batch_size
    return {
        "topology": topology, "chip": chip.name, "chips": len(devices), "hosts": hosts,
        "mesh": dict(mesh.shape),
        "config": {"latent_dim": config.model.latent_dim, "batch_size": batch,
                   "steps_per_call": k, "dtype": config.model.dtype, "prior": config.model.prior,
                   "align_mode": config.objective.align_mode, "data": spec.name,
                   "feeding": placement},
        "data_shape_from": spec_source,
        "hbm_per_chip_bytes": chip.hbm_bytes,
        "hbm_needed_bytes": int(needed),
        "hbm_parts_bytes": parts,
        "hbm_training_call_bytes": int(train_peak),
        "hbm_evaluation_bytes": int(eval_peak),
        "fits": needed <= chip.hbm_bytes,
        "flops": flops,
        "matmul_flops": matmul_flops,
        "bytes_accessed": accessed,
        "compiler_optimal_seconds": cost.get("optimal_seconds"),
        "unknown_cost_calls": len(unknown),
        "estimated_step_seconds": estimated,
        "estimated_step_source": (
            "the compiler's optimal_seconds" if not unknown else
            f"the compiler's optimal_seconds with its {len(unknown)} ConcatBitcast custom calls "
            "counted as 0 s instead of its -1 s sentinel"),
        "roofline_step_seconds": roofline,
        "minimal_bytes": minimal["total"],
        "minimal_bytes_parts": minimal,
        "minimal_step_seconds": minimal_seconds,
        "bytes_over_minimal": accessed / minimal["total"],
        "predicted_samples_per_second": batch / estimated if estimated > 0 else None,
        "chip_figures": dataclasses.asdict(chip),
        "largest_instructions": [dataclasses.asdict(r) for r in hlo_costs.largest(table, instructions)],
        "instruction_table": hlo_costs.format_table(table, instructions),
        "hlo_text": text,
    }


# ----------------------------------------------------------------------------- output


def format_report(r: dict) -> str:
    """The figures of :func:`analyse` as a short text report."""
    c, p = r["config"], r["hbm_parts_bytes"]
    gib = _size
    lines = [
        f"{r['topology']}: {r['chips']} {r['chip']} chips on {r['hosts']} host(s), mesh "
        + " x ".join(f"{k} {v}" for k, v in r["mesh"].items())
        + f"; L={c['latent_dim']}, B={c['batch_size']}, {c['dtype']}, prior {c['prior']}, "
          f"alignment {c['align_mode']}, K={c['steps_per_call']}, {c['feeding']} feeding",
        "",
        f"HBM per chip: {gib(r['hbm_needed_bytes'])} of {gib(r['hbm_per_chip_bytes'])}: "
        + ("fits" if r["fits"] else "DOES NOT FIT"),
        f"  parameters {gib(p['parameters'])}, optimizer state {gib(p['optimizer_state'])}, "
        f"resident data {gib(p['resident_data'])}, batch inputs {gib(p['batch_inputs'])}",
        f"  temporaries {gib(p['temporaries'])}, program {gib(p['program'])}, other outputs "
        f"{gib(p['unaliased_outputs'])}; training call {gib(r['hbm_training_call_bytes'])}, "
        f"evaluation {gib(r['hbm_evaluation_bytes'])}",
        "",
        f"one training step per chip (the TPU compiler's cost model): {r['flops'] / 1e9:.3f} GFLOP, "
        f"{r['bytes_accessed'] / 1e6:.1f} MB accessed",
        f"  estimated step {r['estimated_step_seconds'] * 1e3:.3f} ms ({r['estimated_step_source']})",
        f"  roofline of these counts {r['roofline_step_seconds'] * 1e3:.3f} ms; of the minimal "
        f"traffic ({r['minimal_bytes'] / 1e6:.1f} MB) {r['minimal_step_seconds'] * 1e3:.3f} ms; "
        f"bytes accessed / minimal {r['bytes_over_minimal']:.2f}",
        f"  predicted {r['predicted_samples_per_second']:,.0f} samples/s"
        if r["predicted_samples_per_second"] else "  predicted samples/s: n/a",
        f"  chip figures: {r['chip_figures']['peak_flops'] / 1e12:.0f} TFLOP/s, "
        f"{r['chip_figures']['hbm_bandwidth'] / 1e9:.0f} GB/s ({r['chip_figures']['source']})",
        "",
        "costliest instructions of the step (operand + result bytes per chip):",
        r["instruction_table"],
    ]
    return "\n".join(lines)


def _size(num_bytes: float) -> str:
    """Bytes in GiB, or in MiB below a GiB."""
    return f"{num_bytes / GIB:.2f} GiB" if num_bytes >= GIB else f"{num_bytes / 2**20:.1f} MiB"


def parse_overrides(pairs: list[str]) -> dict:
    """``--config.a.b=value`` arguments as {"a.b": value}, values read as Python literals where
    they are one ("3200" -> 3200, "(32,)" -> (32,)), else kept as text."""
    overrides = {}
    for pair in pairs:
        if not pair.startswith("--config.") or "=" not in pair:
            raise ConfigError(f"unexpected argument {pair!r}; overrides look like --config.key=value")
        key, value = pair[len("--config."):].split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def main(argv=None) -> int:
    """The command line; returns the exit status."""
    parser = cli.OneLineParser(prog="python -m vscjax.aot", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="a config file (default: configs/default.py)")
    parser.add_argument("--topology", required=True,
                        help="TPU slice, e.g. v5e:2x2, v5e:4x4, v4:2x2x1, v6e:2x2, v5p:2x2x1")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--hlo", help="also write the compiled one-step call's HLO text here")
    parser.add_argument("--instructions", type=int, default=15,
                        help="how many of the step's costliest instructions to list (default 15)")
    args, rest = parser.parse_known_args(argv)
    try:
        config = load_file(args.config, parse_overrides(rest))
        report = analyse(config, args.topology, instructions=max(args.instructions, 0),
                         log=lambda line: print(line, file=sys.stderr))
        if args.hlo:
            write_text_atomic(args.hlo, report["hlo_text"])
        print(format_report(report))
        if args.json:
            record = {k: v for k, v in report.items() if k not in ("instruction_table", "hlo_text")}
            record["provenance"] = {**provenance.record(extra_packages=("libtpu",)),
                                    "command": " ".join(["python -m vscjax.aot", *(argv or sys.argv[1:])])}
            write_json_atomic(args.json, record, indent=2)
    except OSError as err:
        print(f"vscjax.aot: {cli.os_error_line(err)}", file=sys.stderr)
        return 1
    except (ConfigError, CompileError, data.DataError) as err:
        print(f"vscjax.aot: {err}", file=sys.stderr)
        return 1
    if not report["fits"]:
        over = report["hbm_needed_bytes"] - report["hbm_per_chip_bytes"]
        print(f"vscjax.aot: does not fit: needs {report['hbm_needed_bytes'] / GIB:.2f} GiB per chip, "
              f"{over / GIB:.2f} GiB more than a {report['chip']} chip's "
              f"{report['hbm_per_chip_bytes'] / GIB:.0f} GiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
