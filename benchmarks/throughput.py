"""Training-step throughput of vscjax against PyTorch (eager and torch.compile), one process.

    python -m benchmarks.throughput --smoke --out /tmp/bench/cpu.json   # 2 tiny configurations
    python -m benchmarks.throughput --quick     # L 200, 3200; B 128 (sized for < 3 min on 2 cores)
    python -m benchmarks.throughput --full      # L x B x align (sized for about an hour on 2 cores)
    python -m benchmarks.throughput --quick --steps-per-call 8   # + vscjax running 8 steps a call
    python -m benchmarks.throughput --end-to-end   # train.py's loop beside the step (end_to_end.py)
    benchmarks/gpu.sh                           # --device gpu, float32 and bfloat16, ~10 minutes
    python -m benchmarks.throughput --from benchmarks/results/cpu.json --readme-table

The run times above are estimates from the sizes, not measurements.

The contenders (vscjax's step, torch eager, torch.compile, vscjax K steps per call), how a step
is timed, the threads and the roofline are ``benchmarks.harness``'s; this module measures the
bare step over a grid of sizes, reports it, and is the command line of the end-to-end
benchmark too (``benchmarks.end_to_end``).

Outputs: a markdown table on stdout, a JSON file (``--out``) with the device, its provenance
(versions, devices, git commit: ``vscjax.provenance``), thread count, command line, quiet-check
verdict and every measurement, and a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from benchmarks import end_to_end, harness
from vscjax.atomic import replace_file, write_json_atomic
from vscjax.tables import fmt

# ----------------------------------------------------------------------------- reporting


def markdown_table(results: list[dict]) -> str:
    """The results as a markdown table, one row per configuration and contender."""
    head = ("| L | B | align | dtype | contender | samples/s median | p90 (slow tail) | compile s "
            "| peak MiB | page faults/step | GFLOP/s | % of matmul peak | vs torch eager "
            "| vs torch.compile |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        rows.append("| " + " | ".join([
            str(r["latent"]), str(r["batch"]), r["align"], r["dtype"], r["contender"],
            f"{r['samples_per_s_median']:,.0f}", f"{r['samples_per_s_p90']:,.0f}",
            f"{r['first_call_s']:.1f}", fmt(r["peak_mib"], ".0f"),
            fmt(r.get("page_faults_per_step"), ",.0f"), f"{r['gflops']:.1f}",
            f"{100 * r['peak_fraction']:.1f}", fmt(r["ratio_vs_torch_eager"], ".2f"),
            fmt(r["ratio_vs_torch_compile"], ".2f"),
        ]) + " |")
    return "\n".join(rows)


def report_text(report: dict) -> str:
    """The header lines, the table and the notes printed after a run."""
    peaks = ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in report["matmul_peak_gflops"].items())
    versions = harness.report_versions(report)
    lines = [f"device: {report['device']} ({report['platform']}), threads: {report['threads']}, "
             f"jax {versions['jax']}, torch {versions['torch']}",
             f"quiet check: {report['quiet']['output']}",
             f"matmul peak: {peaks}", "", markdown_table(report["results"]), ""]
    lines += [f"skipped: L={s['latent']} B={s['batch']} {s['align']} {s['dtype']} {s['contender']}: "
              f"{s['reason']}" for s in report["skipped"]]
    lines += report["notes"]
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    """samples/s against L (log x), one line per contender, one panel per (B, align, dtype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["batch"], r["align"], r["dtype"]) for r in results})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (batch, align, dtype) in zip(axes[0], panels):
        for name in dict.fromkeys(r["contender"] for r in results):
            points = sorted((r["latent"], r["samples_per_s_median"]) for r in results
                            if (r["batch"], r["align"], r["dtype"]) == (batch, align, dtype)
                            and r["contender"] == name)
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel="latent dim L", ylabel="samples/s",
               title=f"B={batch}, align {align}, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with replace_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def print_instruction_tables(args, k: int) -> None:
    """Where the bytes of vscjax's compiled step go, at each configuration of the grid: its
    ``k`` costliest instructions and the totals (``vscjax.hlo_costs``), and XLA's own totals
    (``cost_analysis``). Counts, not times: the machine need not be quiet."""
    from vscjax import cpu_random, hlo_costs

    cpu_random.unroll_threefry()  # as the trainer and the timed runs compile it
    grid = harness.GRIDS[args.grid]
    hidden = tuple(args.hidden or grid["hidden"])
    for latent, batch, align in harness.grid_configurations(args):
        for dtype in args.dtype or ["float32"]:
            compiled = harness.compiled_vscjax_step(latent, batch, align, dtype, hidden,
                                                    args.steps_per_call or 1)
            cost = compiled.cost_analysis()
            table = hlo_costs.rows(compiled.as_text())
            print(f"\nL={latent} B={batch} align={align} {dtype}, {args.steps_per_call or 1} "
                  f"step(s) per call: XLA's cost analysis {cost.get('bytes accessed', 0) / 1e6:.1f} MB "
                  f"accessed, {cost.get('flops', 0) / 1e9:.3f} GFLOP")
            print(hlo_costs.format_table(table, k))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    for grid in harness.GRIDS:
        size.add_argument(f"--{grid}", dest="grid", action="store_const", const=grid,
                          help=f"the {grid} grid ({len(harness.GRIDS[grid]['configs'])} "
                               "configurations)")
    parser.set_defaults(grid="quick")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/<device>.json); "
                                      "the PNG plot goes beside it")
    parser.add_argument("--threads", type=int, help="CPU threads of both frameworks (default: all)")
    parser.add_argument("--latent", type=int, nargs="+", help="override the grid's latent dims")
    parser.add_argument("--batch", type=int, nargs="+", help="override the grid's batch sizes")
    parser.add_argument("--align", nargs="+", choices=("off", "centroid", "pairwise"),
                        help="override the grid's alignment modes")
    parser.add_argument("--dtype", nargs="+", choices=("float32", "bfloat16"),
                        help="compute dtypes (default: float32 on CPU, float32 and bfloat16 on GPU)")
    parser.add_argument("--hidden", type=int, nargs="+", help="MLP hidden sizes (default 400)")
    parser.add_argument("--contenders", nargs="+", choices=harness.CONTENDERS,
                        default=list(harness.CONTENDERS))
    parser.add_argument("--steps-per-call", type=int, default=None, metavar="K",
                        help="also time vscjax running K steps per jitted call (lax.scan, batches "
                             "gathered on the device); with --end-to-end: the K of its third "
                             "trainer row (default 8)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="time train.py's own loop (data, step, logging) beside the bare step, "
                             "for vscjax and a PyTorch DataLoader loop (benchmarks/end_to_end.py)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="--end-to-end: num_workers of the PyTorch DataLoader (default 0)")
    parser.add_argument("--max-minutes", type=float,
                        help="start no configuration after this many minutes (the rest: skipped)")
    parser.add_argument("--instructions", type=int, metavar="N",
                        help="time nothing: print the N costliest instructions (bytes, FLOPs) of "
                             "vscjax's compiled step at each configuration (vscjax.hlo_costs)")
    parser.add_argument("--readme-table", action="store_true", help="print the markdown table only")
    parser.add_argument("--from", dest="from_json", metavar="JSON",
                        help="print the report of an earlier results file; run nothing")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        if report.get("kind") == "end_to_end":
            print(end_to_end.markdown_table(report["results"]) if args.readme_table
                  else end_to_end.report_text(report))
        else:
            print(markdown_table(report["results"]) if args.readme_table else report_text(report))
        return
    if args.steps_per_call is not None and args.steps_per_call < 1:
        sys.exit(f"--steps-per-call must be >= 1, got {args.steps_per_call}")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    if args.instructions:
        print_instruction_tables(args, args.instructions)
        return
    header = harness.prepare_run(args, log)
    if args.end_to_end:
        end_to_end.run(args, header, log)
        return
    grid = harness.GRIDS[args.grid]
    hidden = tuple(args.hidden or grid["hidden"])
    dtypes = harness.run_dtypes(args)
    out = harness.results_path(args, f"{args.device}.json")

    n = grid["matmul_n"][args.device]
    peaks = {dtype: harness.matmul_peak_gflops(n, dtype) for dtype in dtypes}
    log(f"matmul peak ({n}^3): " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peaks.items()))
    schedule = {k: grid[k] for k in ("warmup", "repeats", "min_repeat_s")}
    results, skipped = [], []
    began = time.perf_counter()
    for latent, batch, align in harness.grid_configurations(args):
        for dtype in dtypes:
            where = dict(latent=latent, batch=batch, align=align, dtype=dtype)
            if args.max_minutes and time.perf_counter() - began > 60 * args.max_minutes:
                skipped += [{**where, "contender": c, "reason": "time budget (--max-minutes) spent"}
                            for c in args.contenders]
                continue
            log(f"L={latent} B={batch} align={align} {dtype}")
            r, s = harness.run_configuration(latent, batch, align, dtype, hidden, args.device,
                                             schedule, peaks, args.contenders, log,
                                             args.steps_per_call or 1)
            results += r
            skipped += s

    report = {
        **header, "grid": args.grid, "hidden": list(hidden), "image_shape": list(harness.IMAGE_SHAPE),
        "num_classes": harness.NUM_CLASSES, "schedule": schedule,
        "matmul_peak_gflops": peaks, "matmul_peak_n": n, "results": results, "skipped": skipped,
        "notes": [
            "FLOPs: the step's matmuls only (forward 2*in*out per layer, backward 2x forward); "
            "align_jsd_per_sample in the JSON counts the alignment loss's JSD evaluations apart.",
            "compile s: the first call (trace, compile, one step); torch eager's is its first step; "
            "torch.compile reuses inductor's on-disk cache, so a rerun of the same shapes compiles faster.",
            "peak MiB: vscjax from XLA's memory analysis (arguments + outputs - donated + temporaries); "
            "torch: torch.cuda.max_memory_allocated on GPU (cuBLAS workspaces included), n/a on CPU.",
            "vscjax's step also runs its non-finite guard and grad-norm metric (elementwise, small).",
            "page faults/step: minor page faults of the process over the timed repeats, per step "
            "(a fresh page the kernel zero-fills: a temporary buffer allocated anew at each call).",
        ] + (["float32 on GPU: both frameworks run matmuls on TF32 tensor cores (JAX's default "
              "precision; torch.set_float32_matmul_precision('high')), the matmul peak too."]
             if args.device == "gpu" else []),
        "wall_s": time.perf_counter() - began,
    }
    write_json_atomic(out, report, indent=2)
    written = [out]
    if results:
        written.append(os.path.splitext(out)[0] + ".png")
        plot(results, written[-1])
    print(markdown_table(results) if args.readme_table else report_text(report))
    log("wrote " + " and ".join(written))


if __name__ == "__main__":
    main()
