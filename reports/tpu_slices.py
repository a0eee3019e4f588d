"""TPU slices without a TPU: every shipped config compiled for a slice, and the largest latent
space a chip holds, from the TPU compiler (``vscjax.aot``; needs libtpu, no TPU).

    python reports/tpu_slices.py                        # every table, README sections rewritten
    python reports/tpu_slices.py --configs mnist tiny   # some configs only (README untouched)
    python reports/tpu_slices.py --from reports/tpu_slices.json   # reprint the tables

The parts can run as separate processes (a compile uses about one core) and merge:

    python reports/tpu_slices.py --parts configs --out /tmp/a.json &
    python reports/tpu_slices.py --parts largest --variants float32:off bfloat16:off --out /tmp/b.json &
    python reports/tpu_slices.py --parts largest --variants float32:centroid bfloat16:centroid \
        --out /tmp/c.json &
    python reports/tpu_slices.py --parts split --out /tmp/d.json; wait
    python reports/tpu_slices.py --from /tmp/a.json /tmp/b.json /tmp/c.json /tmp/d.json \
        --out reports/tpu_slices.json                   # merged, README sections rewritten

Configs: each shipped config on ``--topology`` (default v5e:4x4: 16 chips, 4 hosts) as train.py
would run it there; a config whose batch does not split over the chips runs with the smallest
``mesh.latent`` that splits it (:func:`vscjax.aot.latent_split_for`), and the table says so.

Largest latent space: ``configs/large_latent.py:L`` (alpha = 10 / L) at B = 4096 (unbalanced
batches), with the data mesh (``mesh.latent = 1``: every chip holds the whole state), in float32
and bfloat16, with the alignment off and with the centroid alignment (weight 1). The search
compiles two sizes, fits HBM needed = a + b L through them, compiles the predicted largest L,
brackets it (up from it in steps of 1% of it, doubling, until one does not fit; a step whose
temporaries the compiler cannot place does not fit) and bisects the bracket to within 1%.

A latent space larger than a chip: ``configs/large_latent.py:1048576`` at B = 4096 (bfloat16,
centroid alignment, weight 1) on the slice with the latent axis over 8 and over 16 chips
(``SPLIT_LATENT``).

Writes ``reports/tpu_slices.json`` (the figures and their provenance) and, for the full run, the
README sections ``tpu_configs``, ``tpu_largest_latent`` and ``tpu_latent_split``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

from make_report import replace_section

from vscjax import aot, provenance
from vscjax.atomic import write_json_atomic
from vscjax.config import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEP = 1024  # the search's granularity in L
TOLERANCE = 0.01  # the largest L is found to within this fraction of it
SPLIT_LATENT = (1_048_576, (8, 16))  # L, and the chips its latent axis is split over
VARIANTS = [("float32", "off"), ("bfloat16", "off"), ("float32", "centroid"), ("bfloat16", "centroid")]


def shipped_configs() -> list[str]:
    """Names of the configs in configs/."""
    return sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(ROOT, "configs", "*.py")))


def config_row(name: str, topology: str) -> dict:
    """The aot figures of configs/<name>.py on ``topology`` (or why it does not compile)."""
    path = os.path.join(ROOT, "configs", f"{name}.py")
    config = load_file(path)
    devices = aot.slice_devices(topology)
    latent = aot.latent_split_for(config, len(devices))
    overrides = {} if latent == config.mesh.latent else {"mesh.latent": latent}
    try:
        report = aot.analyse(load_file(path, overrides), topology, instructions=0, log=lambda _: None)
    except aot.CompileError as err:
        return {"config": name, "overrides": overrides, "error": str(err)}
    keep = ("chips", "hosts", "mesh", "hbm_needed_bytes", "hbm_per_chip_bytes", "fits",
            "estimated_step_seconds", "bytes_accessed", "minimal_bytes", "flops",
            "predicted_samples_per_second")
    return {"config": name, "overrides": overrides, "settings": report["config"],
            **{k: report[k] for k in keep}}


def _large(latent_dim: int, dtype: str, align: str, mesh_latent: int = 1):
    overrides = {"train.batch_size": 4096, "train.eval_batch_size": 4096, "data.balanced": False,
                 "model.dtype": dtype, "objective.align_mode": align, "mesh.latent": mesh_latent}
    if align != "off":
        overrides["objective.align_weight.value"] = 1.0
    return load_file(os.path.join(ROOT, "configs", f"large_latent.py:{latent_dim}"), overrides)


def hbm_per_chip(topology: str) -> int:
    """Bytes of HBM of one chip of ``topology`` (``vscjax.aot.CHIPS``)."""
    return aot.CHIPS[aot.slice_devices(topology)[0].device_kind].hbm_bytes


def _needed(latent_dim: int, dtype: str, align: str, topology: str, log) -> tuple[int, dict | None]:
    """(HBM needed per chip, the report) at ``latent_dim``; a state too large to compile counts
    as the chip's HBM plus one byte (it does not fit)."""
    try:
        report = aot.analyse(_large(latent_dim, dtype, align), topology, instructions=0, log=lambda _: None)
    except aot.CompileError as err:
        if "does not fit" not in str(err):
            raise
        log(f"  L={latent_dim:,}: {err}")
        return hbm_per_chip(topology) + 1, None
    log(f"  L={latent_dim:,}: {report['hbm_needed_bytes'] / 2**30:.2f} GiB")
    return report["hbm_needed_bytes"], report


def largest_latent(dtype: str, align: str, topology: str, log=print) -> dict:
    """The largest L (to within ``TOLERANCE`` of it, a multiple of ``STEP``) whose step fits a
    chip of ``topology``: a line through two probes predicts it, the prediction is bracketed
    (from the largest that fits, steps up of ``TOLERANCE`` of it, doubling, until one does
    not), then bisected."""
    log(f"largest L, {dtype}, alignment {align}:")
    probes = (16 * STEP, 64 * STEP)
    (n1, _), (n2, r2) = (_needed(p, dtype, align, topology, log) for p in probes)
    hbm = hbm_per_chip(topology)
    slope = (n2 - n1) / (probes[1] - probes[0])
    guess = max(probes[1] + STEP, int((probes[0] + (hbm - n1) / slope) // STEP) * STEP)
    fits = {probes[1]: (n2, r2)}  # L -> (HBM needed, report) of every L that fits
    too_big = {}  # L -> HBM needed (or HBM + 1: no room for the temporaries)
    needed, report = _needed(guess, dtype, align, topology, log)
    (fits if needed <= hbm else too_big)[guess] = (needed, report) if needed <= hbm else needed
    stride = max(STEP, int(guess * TOLERANCE) // STEP * STEP)
    while not too_big:  # the prediction fits: step up, each step twice the last, until one does not
        guess += stride
        stride *= 2
        needed, report = _needed(guess, dtype, align, topology, log)
        (fits if needed <= hbm else too_big)[guess] = (needed, report) if needed <= hbm else needed
    lo, hi = max(fits), min(too_big)
    while hi - lo > max(STEP, int(lo * TOLERANCE)):
        mid = (lo + hi) // 2 // STEP * STEP
        needed, report = _needed(mid, dtype, align, topology, log)
        if needed <= hbm:
            fits[mid], lo = (needed, report), mid
        else:
            too_big[mid], hi = needed, mid
    needed, report = fits[lo]
    return {"dtype": dtype, "align": align, "largest_latent_dim": lo, "hbm_needed_bytes": needed,
            "next_latent_dim": hi, "next_needs_bytes": too_big[hi], "hbm_per_chip_bytes": hbm,
            "estimated_step_seconds": report["estimated_step_seconds"] if report else None,
            "predicted_samples_per_second": report["predicted_samples_per_second"] if report else None,
            "probes": {str(probes[0]): n1, str(probes[1]): n2}}


def split_row(mesh_latent: int, topology: str) -> dict:
    """The aot figures of L = ``SPLIT_LATENT[0]`` with its latent axis over ``mesh_latent`` chips."""
    report = aot.analyse(_large(SPLIT_LATENT[0], "bfloat16", "centroid", mesh_latent), topology,
                         instructions=0, log=lambda _: None)
    keep = ("mesh", "hbm_needed_bytes", "hbm_parts_bytes", "hbm_per_chip_bytes", "fits",
            "estimated_step_seconds", "predicted_samples_per_second", "bytes_accessed", "minimal_bytes")
    return {"latent_dim": SPLIT_LATENT[0], **{k: report[k] for k in keep}}


def split_table(rows: list[dict], topology: str) -> list[str]:
    lines = [f"| L, {topology}, B=4096, bf16, centroid | mesh data x latent | HBM per chip "
             "| of which state | estimated step | samples/s |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        parts = r["hbm_parts_bytes"]
        state = parts["parameters"] + parts["optimizer_state"]
        lines.append(f"| {r['latent_dim']:,} | {r['mesh']['data']} x {r['mesh']['latent']} | "
                     f"{r['hbm_needed_bytes'] / 2**30:.2f} GiB | {state / 2**30:.2f} GiB | "
                     f"{r['estimated_step_seconds'] * 1e3:.1f} ms | "
                     f"{r['predicted_samples_per_second']:,.0f} |")
    return lines


def config_table(rows: list[dict], topology: str) -> list[str]:
    lines = [f"| config ({topology}) | mesh data x latent | HBM per chip | fits | estimated step "
             "| samples/s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | | | no: {r['error']} | | |")
            continue
        mesh = f"{r['mesh']['data']} x {r['mesh']['latent']}"
        lines.append(f"| {r['config']} | {mesh} | {r['hbm_needed_bytes'] / 2**30:.2f} GiB | "
                     f"{'yes' if r['fits'] else 'no'} | {r['estimated_step_seconds'] * 1e3:.2f} ms | "
                     f"{r['predicted_samples_per_second']:,.0f} |")
    return lines


def latent_table(rows: list[dict], topology: str) -> list[str]:
    lines = [f"| {topology}, data mesh, B=4096 | largest L found | HBM per chip | does not fit at "
             "| estimated step |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        step = "n/a" if r["estimated_step_seconds"] is None else f"{r['estimated_step_seconds'] * 1e3:.1f} ms"
        lines.append(f"| {r['dtype']}, alignment {r['align']} | {r['largest_latent_dim']:,} | "
                     f"{r['hbm_needed_bytes'] / 2**30:.2f} GiB | {r['next_latent_dim']:,} | {step} |")
    return lines


PARTS = ("configs", "largest", "split")


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def merged(paths: list[str]) -> dict:
    """One record from the JSON files of runs of some parts each: their rows in order, the
    last file's topology and provenance, every file's command."""
    record = {"configs": [], "largest_latent": [], "latent_split": [], "commands": []}
    for part in map(_read, paths):
        for key in ("configs", "largest_latent", "latent_split"):
            record[key] += part.get(key, [])
        record["commands"] += part.get("commands", [part.get("command")])
        record.update(topology=part["topology"], provenance=part.get("provenance"))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topology", default="v5e:4x4")
    parser.add_argument("--configs", nargs="*", help="config names (default: every shipped config)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="what to compile: the shipped configs, the largest-L search, the "
                             "split rows (default: all; runs of some parts merge with --from)")
    parser.add_argument("--variants", nargs="+", choices=[f"{d}:{a}" for d, a in VARIANTS],
                        help="the largest-L search's dtype:alignment pairs (default: all four)")
    parser.add_argument("--out", default=os.path.join(HERE, "tpu_slices.json"))
    parser.add_argument("--from", dest="sources", nargs="+",
                        help="rewrite the tables from these JSON files (of runs of some parts each)")
    args = parser.parse_args()
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    if args.sources:
        record = merged(args.sources)
        if args.out != parser.get_default("out") or len(args.sources) > 1:
            write_json_atomic(args.out, record, indent=2)
    else:
        rows, largest, split = [], [], []
        if "configs" in args.parts:
            for name in args.configs or shipped_configs():
                rows.append(config_row(name, args.topology))
                log(f"{name}: done")
        if "largest" in args.parts:
            chosen = [v for v in VARIANTS if not args.variants or f"{v[0]}:{v[1]}" in args.variants]
            largest = [largest_latent(d, a, args.topology, log=log) for d, a in chosen]
        if "split" in args.parts:
            split = [split_row(m, args.topology) for m in SPLIT_LATENT[1]]
        record = {"topology": args.topology, "configs": rows, "largest_latent": largest,
                  "latent_split": split,
                  "command": " ".join(["python reports/tpu_slices.py", *sys.argv[1:]]),
                  "provenance": provenance.record(extra_packages=("libtpu",))}
        write_json_atomic(args.out, record, indent=2)
    complete = all(record.get(k) for k in ("configs", "largest_latent", "latent_split"))
    if complete and not args.configs:
        readme = os.path.join(ROOT, "README.md")
        replace_section(readme, "tpu_configs", config_table(record["configs"], record["topology"]))
        replace_section(readme, "tpu_largest_latent",
                        latent_table(record["largest_latent"], record["topology"]))
        replace_section(readme, "tpu_latent_split", split_table(record["latent_split"], record["topology"]))
    for key, table in (("configs", config_table), ("largest_latent", latent_table),
                       ("latent_split", split_table)):
        if record.get(key):
            print("\n".join(table(record[key], record["topology"])) + "\n")


if __name__ == "__main__":
    main()
