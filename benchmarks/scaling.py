"""Step time and peak memory of vscjax against PyTorch as the latent dimension L grows (CPU).

    python -m benchmarks.scaling --smoke --out /tmp/scaling/smoke.json   # L 64, 128: a check
    python -m benchmarks.scaling                      # L 1,024 -> 65,536, B=520, both modes
    python -m benchmarks.scaling --latent 1024 4096 16384 --align pairwise --contenders vscjax
    python -m benchmarks.scaling --from benchmarks/results/scaling-cpu.json

Each point (framework, align, L) is one full training step (forward, backward, Adam) of the
MLP VSC of benchmarks/harness.py (MNIST-shaped random images, 28x28x1, hidden 400, relaxed
mask, fixed prior), with the contenders of that module: ``vscjax`` (``make_train_step``,
jitted, state donated), ``torch`` (the eager reference) and, on request, ``torch.compile``.
Each framework initialises its own weights (the same layers, its own default initialiser), so
that no JAX computation lands in the torch child's memory; the work is the same. Labels are
class-balanced in class-major order (``np.repeat(arange(10), B / 10)``), so the batch must
divide by the 10 classes: the default B is 520 (not 512; it divides by 10 and by 8). Pairwise
alignment then compares pairs only within each class's block, in both frameworks (vscjax
``class_major=True``, the large-latent path; the torch reference's ``class_major`` path, the
same definition); centroid is unaffected by the order.

Timing (``harness.measure``): the first call (trace, compile, one step) is reported apart
as "compile s"; one warm-up step; then ``--repeats`` repeats, each of enough steps to last
0.5 s, each ended by a block on the result; "step s" is the median over repeats.

Memory: every point runs in its own child process, pinned to the same CPUs. "peak MiB" is
the child's peak resident set (``ru_maxrss`` from ``os.wait4``) minus that of a baseline
child that imports the same modules (jax, torch, flax, vscjax, the reference) and builds
nothing, so both frameworks are measured alike. vscjax also gets XLA's compiled memory
analysis of the jitted step ("XLA MiB": arguments + outputs - donated + temporaries).
torch.compile's compile workers are other processes, outside its child's peak.

Failures: a child that is killed (most likely by the kernel's OOM killer) or raises
MemoryError or an out-of-memory RuntimeError is recorded as "OOM", one that fails otherwise
as "failed", one that runs past ``--max-seconds-per-point`` (start-up and compile included) as
"timeout"; larger L of that framework and mode are then skipped. Each child's data segment is
capped at ``--memory-limit-gib`` (default: the machine's memory), so an allocation past it
fails in the child instead of waking the OOM killer. The largest L each framework and mode
reaches is reported.

Scaling: the slope of log(step s) against log(L) over the points with L >= 4,096, per
framework and mode (the target for vscjax: <= 1.1, linear in L).

Before the points, a child checks that both frameworks' alignment losses agree (value and
gradient, rtol 1e-4 and 1e-3) on one small class-major batch, for the class-block path
(several dimension chunks, the last one short) and the all-pairs path.

Outputs: a markdown table on stdout, a JSON file (``--out``, default
benchmarks/results/scaling-cpu.json) with the device, its provenance (versions, devices, git
commit: ``vscjax.provenance``), threads, command, quiet-check verdict, every point and the
fits, and a PNG beside it (step time and peak memory against L, log-log, the fitted slope in
the legend). ``--from JSON`` re-prints the report. CPU only; never with fake host devices (one
CPU device is asserted in every child).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import harness
from vscjax.atomic import replace_file, write_json_atomic
from vscjax.tables import fmt

FRAMEWORKS = ("vscjax", "torch", "torch.compile")
ALIGNS = ("pairwise", "centroid")
PRESETS = {
    "full": dict(latent=[2**k for k in range(10, 17)], batch=520, hidden=(400,), fit_from=4096,
                 min_repeat_s=0.5),
    "smoke": dict(latent=[64, 128], batch=40, hidden=(32,), fit_from=64, min_repeat_s=0.0),
}
SLOPE_TARGET = 1.1  # vscjax's step time should grow at most about linearly in L
OOM_WORDS = ("out of memory", "resource_exhausted", "can't allocate", "cannot allocate")
CHECK = dict(per_class=4, latent=301, max_block_elements=1000)  # 6-dim chunks, the last one short
# The sharded row: the latent dimension over mesh.latent of 2 CPU devices against 1 (memory
# only: the devices share one process's cores, so no time is reported).
SHARDED = dict(latent=262_144, batch=60, devices=2, mesh_latent=(1, 2), steps=2)


# ----------------------------------------------------------------------------- child side


def class_major_labels(batch: int):
    """Labels [B] int32: B / C samples of class 0, then of class 1, ... (class-major order)."""
    import numpy as np

    return np.repeat(np.arange(harness.NUM_CLASSES, dtype=np.int32), batch // harness.NUM_CLASSES)


def _import_everything() -> None:
    """Load every module a point loads and start JAX's CPU client (the baseline's work)."""
    import jax
    from flax import nnx  # noqa: F401

    from benchmarks import torch_reference  # noqa: F401
    from vscjax import models, program, state, train  # noqa: F401

    assert jax.device_count() in (1, SHARDED["devices"]), f"{jax.device_count()} CPU devices"


def compile_skip_reason(latent: int, batch: int, align: str) -> str | None:
    """Why torch.compile is not run at this size (too many pairwise blocks to unroll), or None."""
    from benchmarks.torch_reference import DEFAULT_BLOCK_ELEMENTS, dim_chunk

    if align != "pairwise":
        return None
    per_class = batch // harness.NUM_CLASSES
    blocks = math.ceil(latent / dim_chunk(harness.NUM_CLASSES, per_class, latent, DEFAULT_BLOCK_ELEMENTS))
    if blocks > harness.COMPILE_BLOCK_LIMIT:
        return f"torch.compile would unroll {blocks} pairwise blocks (> {harness.COMPILE_BLOCK_LIMIT})"
    return None


def run_point(job: dict) -> dict:
    """Time one (framework, align, L) point: status "ok" with its step seconds, compile
    seconds and XLA MiB, or "skipped" with the reason."""
    from vscjax.state import initial_state

    latent, batch, align, hidden = job["latent"], job["batch"], job["align"], tuple(job["hidden"])
    if job["framework"] == "torch.compile" and (reason := compile_skip_reason(latent, batch, align)):
        return {"status": "skipped", "error": reason}
    images, _ = harness.make_data(batch)  # [B, 28, 28, 1]
    labels = class_major_labels(batch)  # [B]
    config = harness.vscjax_config(latent, batch, align, "float32", hidden)
    if job["framework"] == "vscjax":
        graphdef, state, tx = initial_state(config, harness.IMAGE_SHAPE, harness.NUM_CLASSES)
        contender = harness.vscjax_contender(graphdef, state, tx, config, images, labels, class_major=True)
        del state  # the contender holds its own copy
    else:  # torch's own initial weights: no JAX computation in torch's memory
        contender = harness.torch_contender(None, latent, align, "float32", hidden, images, labels,
                                       "cpu", compiled=job["framework"] == "torch.compile",
                                       class_major=True)
    m = harness.measure(contender, warmup=1, repeats=job["repeats"], min_repeat_s=job["min_repeat_s"])
    return dict(status="ok", step_s_median=statistics.median(m["step_s"]), step_s=m["step_s"],
                steps_per_repeat=m["steps_per_repeat"], compile_s=m["first_call_s"],
                xla_peak_mib=m["peak_mib"])


def run_sharded_point(job: dict) -> dict:
    """Peak memory of vscjax's step with the latent dimension over ``mesh_latent`` of
    ``devices`` CPU devices (the trainer's program, ``vscjax.program``): a few steps run, the
    state made where it lives (split, never whole on one device)."""
    import jax

    from vscjax import sharding
    from vscjax.program import DataSpec, TrainProgram

    latent, batch, devices = job["latent"], job["batch"], job["devices"]
    assert jax.device_count() == devices, f"expected {devices} CPU devices, got {jax.device_count()}"
    config = harness.vscjax_config(latent, batch, "off", "float32", tuple(job["hidden"]))
    with config.unlocked():
        config.mesh.latent = job["mesh_latent"]
        config.data.placement = "host"
    mesh = sharding.make_mesh(job["mesh_latent"])
    program = TrainProgram(config, DataSpec("random", harness.IMAGE_SHAPE, harness.NUM_CLASSES,
                                            batch, None), mesh)
    images, _ = harness.make_data(batch)
    placed = sharding.shard_batch({"image": images, "label": class_major_labels(batch)}, mesh)
    state, key = program.initial_state(), program.key()
    compiled = program.train_steps.lower(state, [placed], None, key).compile()
    for _ in range(job["steps"]):
        state, metrics = compiled(state, [placed], None, key)
    jax.block_until_ready(state)
    m = compiled.memory_analysis()
    xla = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
           + m.temp_size_in_bytes) / harness.MIB
    return dict(status="ok", xla_peak_mib_per_device=xla, loss=float(metrics["loss"][0]))


def check_alignment() -> dict:
    """vscjax and the torch reference give the same alignment loss and gradient on a small
    class-major batch, pairwise (class blocks and all pairs) and centroid; raises if not."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from benchmarks import torch_reference as ref
    from vscjax import alignment

    batch, latent = CHECK["per_class"] * harness.NUM_CLASSES, CHECK["latent"]
    rng = np.random.default_rng(0)
    logits = (4 * rng.standard_normal((batch, latent))).astype(np.float32)  # [B, L], some saturated
    labels = class_major_labels(batch)  # [B]
    values = {}
    for mode, class_major in (("pairwise", True), ("pairwise", False), ("centroid", False)):
        kwargs = dict(mode=mode, class_major=class_major, max_block_elements=CHECK["max_block_elements"])
        jax_value, jax_grad = jax.value_and_grad(alignment.class_alignment_loss)(
            jnp.asarray(logits), jnp.asarray(labels), harness.NUM_CLASSES, **kwargs)
        t_logits = torch.tensor(logits, requires_grad=True)
        torch_value = ref.class_alignment_loss(t_logits, torch.from_numpy(labels).long(),
                                               harness.NUM_CLASSES, **kwargs)
        torch_value.backward()
        name = f"{mode}{' class_major' if class_major else ''}"
        np.testing.assert_allclose(torch_value.item(), float(jax_value), rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(t_logits.grad.numpy(), np.asarray(jax_grad), rtol=1e-3,
                                   atol=1e-6, err_msg=name)
        values[name] = {"vscjax": float(jax_value), "torch": torch_value.item()}
    # On a class-major batch the class blocks hold every same-class pair.
    np.testing.assert_allclose(values["pairwise class_major"]["vscjax"],
                               values["pairwise"]["vscjax"], rtol=1e-4)
    return dict(batch=batch, latent=latent, values=values, passed=True)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or any(w in str(err).lower() for w in OOM_WORDS)


def run_job(job: dict) -> None:
    """Child process entry: pin the CPUs, cap memory, run the job, write its result JSON."""
    import resource

    if job["memory_limit_bytes"]:
        resource.setrlimit(resource.RLIMIT_DATA, (job["memory_limit_bytes"],) * 2)
    harness.configure_process("cpu", job["threads"])
    if job.get("devices", 1) > 1:  # the sharded row's devices; its times are not reported
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={job['devices']}"
    _import_everything()
    try:
        if job["kind"] == "point":
            result = run_point(job)
        elif job["kind"] == "sharded":
            result = run_sharded_point(job)
        elif job["kind"] == "check":
            result = {"status": "ok", **check_alignment()}
        else:  # baseline: the imports above and nothing more
            result = {"status": "ok"}
    except Exception as err:  # recorded by the parent; a larger L of this series is skipped
        result = {"status": "OOM" if _is_oom(err) else "failed",
                  "error": f"{type(err).__name__}: {err}"[:2000]}
    write_json_atomic(job["result"], result)


# ----------------------------------------------------------------------------- parent side


def run_child(job: dict, timeout_s: float) -> dict:
    """Run ``job`` in a fresh process; its result with ``status``, ``child_rss_mib`` and
    ``wall_s`` ("timeout" past ``timeout_s``, "OOM" if killed, "failed" on a bad exit)."""
    with tempfile.TemporaryDirectory() as tmp:
        job = {**job, "result": os.path.join(tmp, "result.json")}
        began = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "benchmarks.scaling", "--job", json.dumps(job)],
                                 cwd=harness.REPO_ROOT, stdout=sys.stderr, start_new_session=True)
        try:
            timed_out = False
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() - began > timeout_s:
                    timed_out = True
                    os.killpg(child.pid, signal.SIGKILL)  # the child and any workers it started
                    _, status, usage = os.wait4(child.pid, 0)
                    break
                time.sleep(0.1)
        except BaseException:
            os.killpg(child.pid, signal.SIGKILL)
            raise
        child.returncode = code = os.waitstatus_to_exitcode(status)
        if timed_out:
            result = {"status": "timeout", "error": f"ran past {timeout_s:.0f} s"}
        elif os.path.exists(job["result"]):
            with open(job["result"]) as f:
                result = json.load(f)
        elif code == -signal.SIGKILL:
            result = {"status": "OOM", "error": "killed (SIGKILL; the kernel's OOM killer, most likely)"}
        else:
            result = {"status": "failed", "error": f"exit code {code}"}
    return {**result, "child_rss_mib": usage.ru_maxrss / 1024, "wall_s": time.monotonic() - began}


def run_series(framework: str, align: str, latents, common: dict, baseline_mib: float,
               timeout_s: float, log) -> list[dict]:
    """Every L of one (framework, align) series, smallest first; after a point that does not
    finish (or is skipped), the larger ones are recorded as skipped."""
    points, stop = [], None
    for latent in sorted(latents):
        where = dict(framework=framework, align=align, latent=latent, batch=common["batch"])
        if stop:
            points.append({**where, "status": "skipped", "error": stop})
            log(f"{framework} {align} L={latent}: skipped ({stop})")
            continue
        r = run_child({**common, **where, "kind": "point"}, timeout_s)
        point = {**where, **r, "peak_rss_mib": r["child_rss_mib"] - baseline_mib}
        points.append(point)
        if point["status"] == "ok":
            log(f"{framework} {align} L={latent}: {point['step_s_median']:.4f} s/step, "
                f"peak {point['peak_rss_mib']:,.0f} MiB, compile {point['compile_s']:.1f} s")
        else:
            stop = f"L={latent} was {point['status']}"
            log(f"{framework} {align} L={latent}: {point['status']}: {point.get('error', '')}")
    return points


def run_sharded_row(common: dict, args, log) -> list[dict]:
    """The sharded row: ``SHARDED["latent"]`` with the latent axis over 1 and 2 of 2 CPU
    devices, each in its own child; the peak RSS (minus a baseline child's with 2 devices) per
    device, and XLA's memory analysis of one device's program."""
    jobs = {**common, "devices": SHARDED["devices"], "batch": SHARDED["batch"]}
    baseline = run_child({**jobs, "kind": "baseline"}, args.max_seconds_per_point)
    rows = []
    for latent in SHARDED["mesh_latent"]:
        r = run_child({**jobs, "kind": "sharded", "latent": SHARDED["latent"], "mesh_latent": latent,
                       "steps": SHARDED["steps"]}, args.max_seconds_per_point)
        rss = r["child_rss_mib"] - baseline["child_rss_mib"]
        rows.append({"latent": SHARDED["latent"], "batch": SHARDED["batch"], "devices": SHARDED["devices"],
                     "mesh_latent": latent, **r, "peak_rss_mib": rss,
                     "peak_rss_mib_per_device": rss / SHARDED["devices"]})
        log(f"sharded L={SHARDED['latent']:,} mesh.latent={latent}: {r['status']}, peak RSS per "
            f"device {rss / SHARDED['devices']:,.0f} MiB")
    return rows


def sharded_table(rows: list[dict]) -> str:
    """The sharded row: L, devices, mesh.latent, peak RSS per device, XLA MiB per device."""
    lines = ["| L | CPU devices | mesh.latent | peak MiB per device (RSS / devices) "
             "| XLA MiB per device | status |", "|---|---|---|---|---|---|"]
    for r in rows:
        ok = r["status"] == "ok"
        lines.append(f"| {r['latent']:,} | {r['devices']} | {r['mesh_latent']} | "
                     f"{fmt(r['peak_rss_mib_per_device'] if ok else None, ',.0f')} | "
                     f"{fmt(r.get('xla_peak_mib_per_device'), ',.0f')} | "
                     f"{r['status'] if ok else r['status'] + ': ' + r.get('error', '')[:80]} |")
    return "\n".join(lines)


def fit_slopes(points: list[dict], fit_from: int) -> list[dict]:
    """Least-squares slope of log(step s) against log(L) over the finished points with
    L >= fit_from, per (framework, align) with at least two of them."""
    fits = []
    for framework, align in sorted({(p["framework"], p["align"]) for p in points}):
        ok = [p for p in points if (p["framework"], p["align"]) == (framework, align)
              and p["status"] == "ok" and p["latent"] >= fit_from]
        if len(ok) >= 2:
            slope = statistics.linear_regression([math.log(p["latent"]) for p in ok],
                                                 [math.log(p["step_s_median"]) for p in ok]).slope
            fits.append(dict(framework=framework, align=align, slope=slope, fit_from=fit_from,
                             points=len(ok)))
    return fits


def largest_latent(points: list[dict]) -> list[dict]:
    """The largest L each (framework, align) finished."""
    series = sorted({(p["framework"], p["align"]) for p in points})
    return [dict(framework=f, align=a, latent=max((p["latent"] for p in points if p["status"] == "ok"
                                                   and (p["framework"], p["align"]) == (f, a)),
                                                  default=None)) for f, a in series]


# ----------------------------------------------------------------------------- reporting


def markdown_table(points: list[dict]) -> str:
    """One row per point: L, align, framework, step s, compile s, peak MiB, XLA MiB, status."""
    rows = ["| L | align | framework | step s | compile s | peak MiB (RSS) | XLA MiB | status |",
            "|---|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: (p["latent"], p["align"], p["framework"])):
        ok = p["status"] == "ok"
        rows.append("| " + " | ".join([
            f"{p['latent']:,}", p["align"], p["framework"],
            fmt(p.get("step_s_median"), ".4f"), fmt(p.get("compile_s"), ".1f"),
            fmt(p.get("peak_rss_mib") if ok else None, ",.0f"), fmt(p.get("xla_peak_mib"), ",.0f"),
            p["status"] if ok else f"{p['status']}: {p.get('error', '')[:80]}",
        ]) + " |")
    return "\n".join(rows)


def report_text(report: dict) -> str:
    """Header lines, the table, the fitted slopes and the largest L reached."""
    v = harness.report_versions(report)
    lines = [f"device: {report['device']}, threads: {report['threads']}, jax {v['jax']}, "
             f"torch {v['torch']}, B={report['batch']}, hidden {report['hidden']}",
             f"quiet check: {report['quiet']['output']}",
             f"baseline child RSS: {report['baseline_rss_mib']:,.0f} MiB (subtracted); "
             f"alignment check: {'passed' if report['alignment_check']['passed'] else 'FAILED'}",
             "", markdown_table(report["points"]), ""]
    for fit in report["fits"]:
        target = (f"; target <= {SLOPE_TARGET}: {'met' if fit['slope'] <= SLOPE_TARGET else 'NOT met'}"
                  if fit["framework"] == "vscjax" else "")
        lines.append(f"slope {fit['framework']} {fit['align']}: {fit['slope']:.2f} "
                     f"(log step s vs log L, {fit['points']} points with L >= {fit['fit_from']:,}){target}")
    lines += [f"largest L {r['framework']} {r['align']}: {fmt(r['latent'], ',')}"
              for r in report["largest_latent"]]
    if report.get("sharded"):
        lines += ["", "the latent dimension split over devices (memory only):",
                  sharded_table(report["sharded"])]
    return "\n".join(lines)


def plot(points: list[dict], fits: list[dict], path: str) -> None:
    """Two log-log panels against L: step seconds, and peak MiB (RSS solid, XLA dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slopes = {(f["framework"], f["align"]): f["slope"] for f in fits}
    fig, (time_ax, mem_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for framework, align in sorted({(p["framework"], p["align"]) for p in points}):
        ok = sorted((p for p in points if (p["framework"], p["align"]) == (framework, align)
                     and p["status"] == "ok"), key=lambda p: p["latent"])
        if not ok:
            continue
        latents = [p["latent"] for p in ok]
        slope = slopes.get((framework, align))
        label = f"{framework} {align}" + (f" (slope {slope:.2f})" if slope is not None else "")
        (line,) = time_ax.plot(latents, [p["step_s_median"] for p in ok], marker="o", label=label)
        mem_ax.plot(latents, [p["peak_rss_mib"] for p in ok], marker="o", color=line.get_color(),
                    label=f"{framework} {align}, RSS")
        if framework == "vscjax":
            mem_ax.plot(latents, [p["xla_peak_mib"] for p in ok], ls="--", marker=".",
                        color=line.get_color(), label=f"{framework} {align}, XLA analysis")
    for ax, ylabel in ((time_ax, "step s (median)"), (mem_ax, "peak MiB")):
        ax.set(xscale="log", yscale="log", xlabel="latent dim L", ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    time_ax.set_title("training step time")
    mem_ax.set_title("peak memory (child RSS - baseline)")
    fig.tight_layout()
    with replace_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny L and model: checks the set-up")
    parser.add_argument("--latent", type=int, nargs="+", help="latent dims (default 1024 ... 65536)")
    parser.add_argument("--batch", type=int, help="batch size, a multiple of the 10 classes (default 520)")
    parser.add_argument("--align", nargs="+", choices=ALIGNS, default=list(ALIGNS))
    parser.add_argument("--contenders", nargs="+", choices=FRAMEWORKS, default=["vscjax", "torch"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds-per-point", type=float, default=300.0,
                        help="wall-clock limit of one point's child, start-up and compile included")
    parser.add_argument("--memory-limit-gib", type=float,
                        help="data-segment cap of each child (default: the machine's memory; 0: none)")
    parser.add_argument("--threads", type=int, help="CPU threads of both frameworks (default: all)")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/scaling-cpu.json, "
                                      "scaling-cpu-smoke.json with --smoke); the PNG goes beside it")
    parser.add_argument("--from", dest="from_json", metavar="JSON",
                        help="print the report of an earlier results file; run nothing")
    parser.add_argument("--no-sharded", action="store_true",
                        help="skip the sharded row (L=262,144 over 1 and 2 of 2 CPU devices)")
    parser.add_argument("--sharded-only", action="store_true", help="run the sharded row alone")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # a child's work, as JSON
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.job:
        run_job(json.loads(args.job))
        return
    if args.from_json:
        with open(args.from_json) as f:
            print(report_text(json.load(f)))
        return
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        sys.exit("XLA_FLAGS holds xla_force_host_platform_device_count: never time fake devices")
    preset = PRESETS["smoke" if args.smoke else "full"]
    batch = args.batch or preset["batch"]
    if batch % harness.NUM_CLASSES:
        sys.exit(f"--batch {batch}: class-major batches need a multiple of the {harness.NUM_CLASSES} classes")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    quiet = harness.quiet_check()  # before anything of ours is busy
    log(f"quiet check: {quiet['output']}")
    threads = args.threads or len(os.sched_getaffinity(0))
    memory_gib = (args.memory_limit_gib if args.memory_limit_gib is not None
                  else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    common = dict(threads=threads, batch=batch, hidden=list(preset["hidden"]), repeats=args.repeats,
                  min_repeat_s=preset["min_repeat_s"], memory_limit_bytes=int(memory_gib * 2**30))
    out = args.out or os.path.join(harness.REPO_ROOT, "benchmarks", "results",
                                   f"scaling-cpu{'-smoke' if args.smoke else ''}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    began = time.perf_counter()

    check = run_child({**common, "kind": "check"}, args.max_seconds_per_point)
    if check["status"] != "ok":
        sys.exit(f"alignment check: vscjax and the torch reference disagree or failed: {check['error']}")
    log(f"alignment check passed: {check['values']}")
    baseline = run_child({**common, "kind": "baseline"}, args.max_seconds_per_point)
    if baseline["status"] != "ok":
        sys.exit(f"baseline child failed: {baseline['error']}")
    log(f"baseline child RSS: {baseline['child_rss_mib']:,.0f} MiB")
    points = []
    for framework in ([] if args.sharded_only else args.contenders):
        for align in args.align:
            points += run_series(framework, align, args.latent or preset["latent"], common,
                                 baseline["child_rss_mib"], args.max_seconds_per_point, log)
    fits = fit_slopes(points, preset["fit_from"])
    sharded = [] if args.smoke or args.no_sharded else run_sharded_row(common, args, log)

    report = {
        **harness.run_record("benchmarks.scaling", "cpu", threads, quiet),
        "batch": batch, "num_classes": harness.NUM_CLASSES, "hidden": list(preset["hidden"]),
        "image_shape": list(harness.IMAGE_SHAPE), "repeats": args.repeats, "warmup": 1,
        "min_repeat_s": preset["min_repeat_s"], "max_seconds_per_point": args.max_seconds_per_point,
        "memory_limit_gib": memory_gib, "baseline_rss_mib": baseline["child_rss_mib"],
        "alignment_check": {k: check[k] for k in ("batch", "latent", "values", "passed")},
        "points": points, "fits": fits, "slope_target_vscjax": SLOPE_TARGET,
        "largest_latent": largest_latent(points), "sharded": sharded,
        "wall_s": time.perf_counter() - began,
    }
    write_json_atomic(out, report, indent=2)
    written = [out]
    if any(p["status"] == "ok" for p in points):
        written.append(os.path.splitext(out)[0] + ".png")
        plot(points, fits, written[-1])
    print(report_text(report))
    log("wrote " + " and ".join(written))


if __name__ == "__main__":
    main()
