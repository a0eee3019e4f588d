"""What every benchmark of the training step shares: the process set-up, the run's record, the
contenders, the timing of a step and the grids of sizes. ``benchmarks.throughput`` (the bare
step and the command line), ``benchmarks.end_to_end`` (the trainer's loop) and
``benchmarks.scaling`` (large latents) build on it and never import each other.

Contenders, on the same MNIST-shaped random data (28x28x1, 10 classes) already on the device
and the same initial weights:

* ``vscjax``: the library's own ``vscjax.train_step.make_train_step`` (forward, backward, Adam,
  non-finite guard) on the state of ``vscjax.state.initial_state``, jitted with the state
  donated, as training runs it; mask "relaxed".
* ``torch eager``: ``benchmarks.torch_reference.make_train_step`` (forward, backward,
  ``torch.optim.Adam``), the same model, relaxed sample, KL and alignment loss.
* ``torch.compile``: the same step under ``torch.compile`` (torch splits it at the backward
  and inside ``optimizer.step``; every piece is compiled).
* ``vscjax K steps/call`` (with ``--steps-per-call K``): ``vscjax.train_step.make_multi_step``, K
  steps per jitted call under ``lax.scan``, each gathering its batch from a set resident on the
  device, as the trainer runs with ``data.placement="device"`` and ``train.steps_per_call=K``;
  its time is per step.

Timing (:func:`measure`): the first call (trace, compile and one step) is reported apart as
"compile s"; then warm-up steps; then repeats of n steps each (n fixed from a calibration step
so a repeat lasts at least ``min_repeat_s``), each ended by a block on the result
(``jax.block_until_ready``; ``loss.item()``, after ``torch.cuda.synchronize()`` on GPU).
"samples/s" is the median over repeats, "p90" the slow tail (the samples/s of the
90th-percentile repeat time).

float32 on GPU means TF32 matmuls in both frameworks (JAX's default there; torch is set to
match with ``torch.set_float32_matmul_precision("high")``).

Threads (CPU): the process is pinned to ``--threads`` CPUs (``os.sched_setaffinity``) before
JAX loads, and torch gets ``torch.set_num_threads``. XLA's CPU client sizes its thread pool
from the CPUs the process may run on; JAX 0.10.2 has no flag for it (``XLA_FLAGS`` rejects
``--intra_op_parallelism_threads``, and silently ignores the same word without dashes).

Roofline: FLOPs per sample count the step's matmuls (forward 2 * in * out per layer, backward
twice the forward); the alignment loss's elementwise work is listed apart (JSD evaluations
per sample: B * L for pairwise, L for centroid, each some 20 operations with logs, recomputed
in the backward). The matmul peak is one large jitted matmul (2048^3 on CPU, 8192^3 on GPU).

JAX and torch are imported inside functions: the platform and the CPU set must be fixed
before they load. Never run with fake host devices: one CPU device is asserted.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from vscjax import provenance

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET_TOOL = os.path.join(os.path.dirname(REPO_ROOT), "shared", "tools", "quiet")
IMAGE_SHAPE, NUM_CLASSES, C_SHARPNESS, ALPHA = (28, 28, 1), 10, 100.0, 0.01
CONTENDERS = ("vscjax", "torch eager", "torch.compile")
MIB = 2**20

# Grids: (L, B, align) configurations and the timing schedule of each preset.
GRIDS = {
    "smoke": dict(configs=[(16, 16, "off"), (64, 16, "pairwise")], hidden=(32,),
                  warmup=1, repeats=3, min_repeat_s=0.0, matmul_n={"cpu": 256, "gpu": 1024}),
    "quick": dict(configs=[(200, 128, "off"), (3200, 128, "off"), (3200, 128, "pairwise")],
                  hidden=(400,), warmup=2, repeats=5, min_repeat_s=0.3,
                  matmul_n={"cpu": 2048, "gpu": 8192}),
    "full": dict(configs=[(latent, batch, align) for latent in (200, 800, 3200, 16384)
                          for batch in (32, 128, 512) for align in ("off", "centroid", "pairwise")],
                 hidden=(400,), warmup=3, repeats=10, min_repeat_s=0.5,
                 matmul_n={"cpu": 2048, "gpu": 8192}),
}
# Pairwise work B * B * L above which a configuration is skipped (seconds per step beyond it).
PAIRWISE_ELEMENT_LIMIT = {"cpu": 2**26, "gpu": 2**32}
# torch.compile unrolls the pairwise loss's Python loop over row blocks; beyond this many
# blocks its compile time explodes and the contender is skipped.
COMPILE_BLOCK_LIMIT = 64


# ----------------------------------------------------------------------------- process set-up


def configure_process(device: str, threads: int | None) -> int:
    """Fix the platform and the CPU set before JAX or torch load; returns the thread count."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        sys.exit("XLA_FLAGS holds xla_force_host_platform_device_count: never time fake devices")
    os.environ["JAX_PLATFORMS"] = "cpu" if device == "cpu" else "cuda"
    if device == "gpu":  # JAX must not take 75% of the GPU: torch runs in the same process
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    cpus = sorted(os.sched_getaffinity(0))
    threads = threads or len(cpus)
    if threads > len(cpus):
        sys.exit(f"--threads {threads}: only {len(cpus)} CPUs are available to this process")
    os.sched_setaffinity(0, cpus[:threads])  # XLA's pool size follows this set
    import torch

    torch.set_num_threads(threads)
    if device == "gpu":  # float32 matmuls on TF32 tensor cores, as JAX does by default on GPU
        torch.set_float32_matmul_precision("high")
    return threads


def quiet_check() -> dict:
    """Verdict of ../shared/tools/quiet (other processes' CPU use), recorded, never fatal."""
    if not os.path.exists(QUIET_TOOL):
        return {"ran": False, "quiet": None, "output": f"{QUIET_TOOL} not found"}
    done = subprocess.run([QUIET_TOOL], capture_output=True, text=True)
    return {"ran": True, "quiet": done.returncode == 0, "output": (done.stdout + done.stderr).strip()}


def device_name(device: str) -> str:
    """The accelerator's name, or the CPU model."""
    if device == "gpu":
        import jax

        return jax.devices()[0].device_kind
    with open("/proc/cpuinfo") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return models[0] if models else platform.processor()


def run_record(module: str, device: str, threads: int, quiet: dict) -> dict:
    """The first fields of every benchmark report: device, platform, threads, provenance (with
    torch's version), command line, date and the quiet-check verdict.

    Args:
      module: the benchmark's module, as run with ``python -m``.
      device: "cpu" or "gpu".
      threads: threads each framework was given.
      quiet: :func:`quiet_check`'s verdict.
    """
    return {"device": device_name(device), "platform": device, "threads": threads,
            "provenance": provenance.record(extra_packages=("torch",)),
            "command": shlex.join([sys.executable, "-m", module, *sys.argv[1:]]),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "quiet": quiet}


# ----------------------------------------------------------------------------- work counts


def matmul_flops_per_sample(latent: int, hidden: tuple[int, ...]) -> int:
    """Matmul FLOPs of one training step per sample: 3x the forward (backward = 2x)."""
    pixels = math.prod(IMAGE_SHAPE)
    layers = [*zip([pixels, *hidden], [*hidden, 3 * latent]),  # encoder and its heads
              *zip([latent, *hidden[::-1]], [*hidden[::-1], pixels])]  # decoder
    return 3 * sum(2 * a * b for a, b in layers)


def align_jsd_per_sample(latent: int, batch: int, align: str) -> int:
    """Bernoulli JSD evaluations per sample of the alignment loss's forward pass."""
    return {"off": 0, "centroid": latent, "pairwise": batch * latent}[align]


def pairwise_blocks(latent: int, batch: int) -> int:
    """Row blocks of the pairwise loss at the default block size (torch.compile unrolls them)."""
    from benchmarks.torch_reference import DEFAULT_BLOCK_ELEMENTS, row_block

    return batch // row_block(batch, latent, DEFAULT_BLOCK_ELEMENTS)


def matmul_peak_gflops(n: int, dtype: str, repeats: int = 5) -> float:
    """GFLOP/s of one jitted n x n x n matmul in ``dtype``, median over repeats."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    matmul = jax.jit(lambda a: a @ a)
    jax.block_until_ready(matmul(a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a))
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


# ----------------------------------------------------------------------------- contenders


@dataclass
class Contender:
    """A ready-to-run training step: ``step()`` runs one call, ``sync(out)`` waits for it."""

    step: Callable[[], object]
    sync: Callable[[object], None]
    peak_mib: Callable[[], float | None]  # read after the timing
    steps_per_call: int = 1  # training steps that one ``step()`` runs
    compiled: Callable[[], object] | None = None  # vscjax: its executable, once it has run


def multi_step_name(steps_per_call: int) -> str:
    """The name of vscjax's contender that runs ``steps_per_call`` steps per jitted call."""
    return f"vscjax {steps_per_call} steps/call"


def make_data(batch: int, seed: int = 0):
    """Random images in [0, 1) [B, 28, 28, 1] float32 and labels [B] int32 (numpy)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(batch, *IMAGE_SHAPE)).astype(np.float32),
            rng.integers(0, NUM_CLASSES, batch).astype(np.int32))


def vscjax_config(latent: int, batch: int, align: str, dtype: str, hidden):
    """The vscjax config of this benchmark: fixed prior, relaxed mask, constant c and weights."""
    from vscjax.config import base_config, schedule, validate

    config = base_config()
    config.model.hidden, config.model.latent_dim, config.model.dtype = tuple(hidden), latent, dtype
    config.objective.alpha, config.objective.mask = ALPHA, "relaxed"
    config.objective.c = schedule("constant", C_SHARPNESS)
    config.objective.align_mode = align
    config.objective.align_weight = schedule("constant", 1.0)
    config.train.batch_size = batch
    validate(config, num_devices=1)
    return config


def vscjax_contender(graphdef, state, tx, config, images, labels, *,
                     class_major: bool = False) -> Contender:
    """vscjax.train_step.make_train_step, jitted with the state donated (compiled on first call).

    ``class_major``: the labels are class-balanced in class-major order, and the pairwise
    alignment loss compares pairs only within class blocks (as training on balanced batches).
    """
    import jax

    from vscjax.train_step import make_train_step

    train_step = jax.jit(make_train_step(graphdef, tx, config.objective, NUM_CLASSES,
                                         class_major=class_major), donate_argnums=0)
    batch = {"image": jax.device_put(images), "label": jax.device_put(labels)}
    return jitted_contender(train_step, state, (batch, jax.random.key(config.seed)))


def jitted_contender(jitted, state, args: tuple, steps_per_call: int = 1) -> Contender:
    """``jitted(state, *args) -> (state, metrics)`` with the state donated, compiled on its
    first call; its peak memory from XLA's memory analysis."""
    import jax
    import jax.numpy as jnp

    state = jax.tree.map(jnp.copy, state)  # donated below; the caller's arrays stay valid
    compiled = None

    def step():
        nonlocal state, compiled
        if compiled is None:
            compiled = jitted.lower(state, *args).compile()
        state, metrics = compiled(state, *args)
        return state, metrics

    def peak_mib():
        m = compiled.memory_analysis()
        live = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
        return (live + m.temp_size_in_bytes) / MIB

    return Contender(step, jax.block_until_ready, peak_mib, steps_per_call, compiled=lambda: compiled)


def vscjax_multi_step_contender(graphdef, state, tx, config, images, labels,
                                steps_per_call: int) -> Contender:
    """``vscjax.train_step.make_multi_step``: ``steps_per_call`` steps per jitted call, each
    gathering its batch from the set on the device (``vscjax.resident``), as the trainer runs
    them with ``data.placement="device"`` and ``train.steps_per_call``; the batch is the same
    ``images`` every step."""
    import jax
    import numpy as np

    from vscjax import resident
    from vscjax.train_step import make_multi_step, make_train_step

    train_steps = jax.jit(make_multi_step(make_train_step(graphdef, tx, config.objective,
                                                         NUM_CLASSES)), donate_argnums=0)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    placed = resident.place(images, None, labels, device)
    indices = jax.device_put(np.tile(np.arange(len(labels), dtype=np.int32), (steps_per_call, 1)))
    return jitted_contender(train_steps, state, (indices, placed, jax.random.key(config.seed)),
                            steps_per_call)


def torch_train_step(jax_model, latent: int, align: str, dtype: str, hidden, device: str,
                     compiled: bool, *, class_major: bool = False):
    """(step, torch device): the torch reference's step ``(x, labels) -> loss``, eager or
    under torch.compile, on ``jax_model``'s weights (None: torch's own initialisation;
    ``class_major`` as in ``vscjax_contender``)."""
    import torch

    from benchmarks import torch_reference as ref

    target = "cuda" if device == "gpu" else "cpu"
    torch.manual_seed(0)
    model = ref.MLPVSC(IMAGE_SHAPE, latent, hidden)
    if jax_model is not None:
        ref.copy_weights_from_vscjax(model, jax_model)
    model = model.to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    step = ref.make_train_step(model, optimizer, c=C_SHARPNESS, alpha=ALPHA, align_mode=align,
                               align_weight=1.0, num_classes=NUM_CLASSES, class_major=class_major,
                               autocast_dtype=torch.bfloat16 if dtype == "bfloat16" else None)
    if compiled:
        torch.compiler.reset()  # a fresh compile (and no recompile limit across configurations)
        step = torch.compile(step)
    return step, target


def torch_contender(jax_model, latent: int, align: str, dtype: str, hidden, images, labels,
                    device: str, compiled: bool, *, class_major: bool = False) -> Contender:
    """The torch reference's step (``torch_train_step``) on one batch already on the device."""
    import torch

    step, target = torch_train_step(jax_model, latent, align, dtype, hidden, device, compiled,
                                    class_major=class_major)
    x = torch.from_numpy(images).to(target)
    y = torch.from_numpy(labels).long().to(target)

    def sync(loss):
        if target == "cuda":
            torch.cuda.synchronize()
        loss.item()

    if target == "cuda":
        torch.cuda.reset_peak_memory_stats()
    peak = (lambda: torch.cuda.max_memory_allocated() / MIB) if target == "cuda" else (lambda: None)
    return Contender(lambda: step(x, y), sync, peak)


# ----------------------------------------------------------------------------- timing


def minor_page_faults() -> int:
    """Minor page faults of this process so far (each a fresh page the kernel zero-fills)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(contender: Contender, *, warmup: int, repeats: int, min_repeat_s: float) -> dict:
    """First-call time, then seconds per step of each repeat (compile and warm-up left out),
    and the minor page faults per step over the repeats (a count: no timing noise)."""
    start = time.perf_counter()
    contender.sync(contender.step())
    first_call_s = time.perf_counter() - start
    for _ in range(warmup):
        contender.sync(contender.step())
    start = time.perf_counter()
    contender.sync(contender.step())
    calls = max(1, math.ceil(min_repeat_s / (time.perf_counter() - start)))
    step_s = []
    faults = minor_page_faults()
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = contender.step()
        contender.sync(out)
        step_s.append((time.perf_counter() - start) / (calls * contender.steps_per_call))
    steps = calls * contender.steps_per_call
    return dict(first_call_s=first_call_s, steps_per_repeat=steps, step_s=step_s,
                page_faults_per_step=(minor_page_faults() - faults) / (repeats * steps),
                peak_mib=contender.peak_mib())


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def is_out_of_memory(err: Exception) -> bool:
    """Whether ``err`` is XLA's or torch's out-of-memory error."""
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def release_torch_cache() -> None:
    """Hand torch's cached GPU memory back (after an out-of-memory contender)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def skip_reason(latent: int, batch: int, align: str, contender: str, device: str) -> str | None:
    """Why a contender is not run at this size (too slow or too long to compile), or None."""
    if align == "pairwise" and batch * batch * latent > PAIRWISE_ELEMENT_LIMIT[device]:
        limit = PAIRWISE_ELEMENT_LIMIT[device]
        return f"pairwise B*B*L = {batch * batch * latent:.2e} > {limit:.2e} on {device}"
    if align == "pairwise" and contender == "torch.compile":
        blocks = pairwise_blocks(latent, batch)
        if blocks > COMPILE_BLOCK_LIMIT:
            return f"torch.compile would unroll {blocks} pairwise row blocks (> {COMPILE_BLOCK_LIMIT})"
    return None


def compiled_vscjax_step(latent: int, batch: int, align: str, dtype: str, hidden,
                         steps_per_call: int = 1):
    """The compiled executable of vscjax's contender at one configuration (the one-step call,
    or the K-step call of ``vscjax_multi_step_contender``): for ``vscjax.hlo_costs``."""
    import jax

    from vscjax.state import initial_state

    images, labels = make_data(batch)
    config = vscjax_config(latent, batch, align, dtype, hidden)
    graphdef, state, tx = initial_state(config, IMAGE_SHAPE, NUM_CLASSES)
    contender = (vscjax_contender(graphdef, state, tx, config, images, labels) if steps_per_call == 1
                 else vscjax_multi_step_contender(graphdef, state, tx, config, images, labels,
                                                  steps_per_call))
    jax.block_until_ready(contender.step())  # compiles on its first call
    return contender.compiled()


def run_configuration(latent, batch, align, dtype, hidden, device, schedule, peaks, contenders,
                      log, steps_per_call: int = 1) -> tuple[list[dict], list[dict]]:
    """Measure every contender at one configuration; returns (results, skipped).

    ``steps_per_call`` > 1 adds vscjax's K-steps-per-call contender after "vscjax".
    """
    from flax import nnx

    from vscjax.state import initial_state

    images, labels = make_data(batch)
    config = vscjax_config(latent, batch, align, dtype, hidden)
    graphdef, state, tx = initial_state(config, IMAGE_SHAPE, NUM_CLASSES)  # as vscjax.train.Trainer builds it
    jax_model = nnx.merge(graphdef, state.params)  # the initial weights of every contender
    flops = matmul_flops_per_sample(latent, hidden)
    where = dict(latent=latent, batch=batch, align=align, dtype=dtype)
    results, skipped = [], []
    names = [name for c in contenders for name in (
        [c, multi_step_name(steps_per_call)] if c == "vscjax" and steps_per_call > 1 else [c])]
    for name in names:
        reason = skip_reason(latent, batch, align, name, device)
        if reason:
            skipped.append({**where, "contender": name, "reason": reason})
            log(f"  {name}: skipped ({reason})")
            continue
        try:
            if name == "vscjax":
                contender = vscjax_contender(graphdef, state, tx, config, images, labels)
            elif name == multi_step_name(steps_per_call):
                contender = vscjax_multi_step_contender(graphdef, state, tx, config, images,
                                                        labels, steps_per_call)
            else:
                contender = torch_contender(jax_model, latent, align, dtype, hidden, images,
                                            labels, device, compiled=name == "torch.compile")
            m = measure(contender, **schedule)
        except Exception as err:  # noqa: BLE001  an out-of-memory size is a result, not a crash
            if not is_out_of_memory(err):
                raise
            contender = None  # drops its buffers before the next contender
            reason = f"out of memory: {str(err).splitlines()[0][:160]}"
            skipped.append({**where, "contender": name, "reason": reason})
            log(f"  {name}: out of memory")
            release_torch_cache()
            continue
        rate = batch / statistics.median(m["step_s"])
        results.append({
            **where, "contender": name, **m,
            "samples_per_s_median": rate,
            "samples_per_s_p90": batch / percentile(m["step_s"], 0.9),
            "flops_per_sample": flops, "align_jsd_per_sample": align_jsd_per_sample(latent, batch, align),
            "gflops": flops * rate / 1e9, "peak_fraction": flops * rate / 1e9 / peaks[dtype],
        })
        log(f"  {name}: {rate:,.0f} samples/s, first call {m['first_call_s']:.1f} s")
        del contender  # frees its model and optimizer before the next one's peak is taken
    for r in results:  # ratios against the torch contenders of the same configuration
        for other, key in (("torch eager", "ratio_vs_torch_eager"),
                           ("torch.compile", "ratio_vs_torch_compile")):
            base = [o["samples_per_s_median"] for o in results if o["contender"] == other]
            r[key] = r["samples_per_s_median"] / base[0] if base else None
    return results, skipped


def report_versions(report: dict) -> dict:
    """The package versions a report was made with (older reports keep them under "versions")."""
    return report["provenance"]["versions"] if "provenance" in report else report["versions"]


def grid_configurations(args) -> list[tuple[int, int, str]]:
    """(L, B, align) of the run: the preset's, or the cross product of the overrides."""
    preset = GRIDS[args.grid]["configs"]
    if not (args.latent or args.batch or args.align):
        return preset
    pick = lambda given, i: given or sorted({c[i] for c in preset})  # noqa: E731
    return [(latent, batch, align) for latent in pick(args.latent, 0)
            for batch in pick(args.batch, 1) for align in pick(args.align, 2)]


def prepare_run(args, log) -> dict:
    """Fix the process (platform, CPU set), check the devices; returns the run's header
    (:func:`run_record`: device, threads, provenance, command, date, the quiet check)."""
    threads = configure_process(args.device, args.threads)
    quiet = quiet_check()  # before anything of ours is busy
    log(f"quiet check: {quiet['output']}")

    import jax
    import torch

    if args.device == "cpu":
        assert jax.device_count() == 1, f"expected one CPU device, got {jax.device_count()}"
        # As vscjax's trainer does on CPUs (the allocator for every contender of the process).
        from vscjax import cpu_random, host_memory

        host_memory.reuse_large_allocations()
        cpu_random.unroll_threefry()
    elif not torch.cuda.is_available() or jax.default_backend() != "gpu":
        sys.exit("--device gpu needs jax[cuda] and a CUDA build of torch seeing a GPU")
    return run_record("benchmarks.throughput", args.device, threads, quiet)


def run_dtypes(args) -> list[str]:
    """The compute dtypes of the run (default: float32 on CPU, float32 and bfloat16 on GPU)."""
    import torch

    dtypes = args.dtype or (["float32"] if args.device == "cpu" else ["float32", "bfloat16"])
    if "bfloat16" in dtypes and args.device == "gpu" and not torch.cuda.is_bf16_supported():
        sys.exit("this GPU does not support bfloat16; pass --dtype float32")
    return dtypes


def results_path(args, default_name: str) -> str:
    """``--out``, or benchmarks/results/<default_name>; its folder is created."""
    out = args.out or os.path.join(REPO_ROOT, "benchmarks", "results", default_name)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    return out
