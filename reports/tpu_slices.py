"""TPU slices without a TPU: every shipped config compiled for a slice, and the largest latent
space a chip holds, from the TPU compiler (``vscjax.aot``; needs libtpu, no TPU).

    python reports/tpu_slices.py                        # both tables, README sections rewritten
    python reports/tpu_slices.py --configs mnist tiny   # some configs only (README untouched)
    python reports/tpu_slices.py --from reports/tpu_slices.json   # reprint the tables

Configs: each shipped config on ``--topology`` (default v5e:4x4: 16 chips, 4 hosts) as train.py
would run it there; a config whose batch does not split over the chips runs with the smallest
``mesh.latent`` that splits it (:func:`vscjax.aot.latent_split_for`), and the table says so.

Largest latent space: ``configs/large_latent.py:L`` (alpha = 10 / L) at B = 4096 (unbalanced
batches), with the data mesh (``mesh.latent = 1``: every chip holds the whole state), in float32
and bfloat16, with the alignment off and with the centroid alignment (weight 1). The search
compiles two sizes, fits HBM needed = a + b L through them, and compiles the predicted largest
L (a multiple of 1,024) and the next one: the largest is one that fits with the next not
fitting, stepping down while the prediction does not fit.

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
            "predicted_samples_per_second", "config")
    return {"config": name, "overrides": overrides, **{k: report[k] for k in keep}}


def _large(latent_dim: int, dtype: str, align: str, mesh_latent: int = 1):
    overrides = {"train.batch_size": 4096, "train.eval_batch_size": 4096, "data.balanced": False,
                 "model.dtype": dtype, "objective.align_mode": align, "mesh.latent": mesh_latent}
    if align != "off":
        overrides["objective.align_weight.value"] = 1.0
    return load_file(os.path.join(ROOT, "configs", f"large_latent.py:{latent_dim}"), overrides)


def _needed(latent_dim: int, dtype: str, align: str, topology: str, log) -> tuple[int, dict | None]:
    """(HBM needed per chip, the report) at ``latent_dim``; a state too large to compile counts
    as the chip's HBM plus one byte (it does not fit)."""
    try:
        report = aot.analyse(_large(latent_dim, dtype, align), topology, instructions=0, log=lambda _: None)
    except aot.CompileError as err:
        if "does not fit" not in str(err):
            raise
        log(f"  L={latent_dim:,}: {err}")
        return aot.CHIPS[aot.slice_devices(topology)[0].device_kind].hbm_bytes + 1, None
    log(f"  L={latent_dim:,}: {report['hbm_needed_bytes'] / 2**30:.2f} GiB")
    return report["hbm_needed_bytes"], report


def largest_latent(dtype: str, align: str, topology: str, log=print) -> dict:
    """The largest L (a multiple of ``STEP``) whose step fits a chip of ``topology``."""
    log(f"largest L, {dtype}, alignment {align}:")
    probes = (16 * STEP, 64 * STEP)
    (n1, _), (n2, _) = (_needed(p, dtype, align, topology, log) for p in probes)
    hbm = aot.CHIPS[aot.slice_devices(topology)[0].device_kind].hbm_bytes
    slope = (n2 - n1) / (probes[1] - probes[0])
    guess = max(STEP, int((probes[0] + (hbm - n1) / slope) // STEP) * STEP)
    needed, report = _needed(guess, dtype, align, topology, log)
    while needed > hbm and guess > STEP:
        guess -= STEP
        needed, report = _needed(guess, dtype, align, topology, log)
    above, _ = _needed(guess + STEP, dtype, align, topology, log)
    return {"dtype": dtype, "align": align, "largest_latent_dim": guess,
            "hbm_needed_bytes": needed, "next_needs_bytes": above, "hbm_per_chip_bytes": hbm,
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
    lines = [f"| {topology}, data mesh, B=4096 | largest L | HBM per chip | next L needs | estimated step |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        step = "n/a" if r["estimated_step_seconds"] is None else f"{r['estimated_step_seconds'] * 1e3:.1f} ms"
        lines.append(f"| {r['dtype']}, alignment {r['align']} | {r['largest_latent_dim']:,} | "
                     f"{r['hbm_needed_bytes'] / 2**30:.2f} GiB | "
                     f"{r['next_needs_bytes'] / 2**30:.2f} GiB | {step} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topology", default="v5e:4x4")
    parser.add_argument("--configs", nargs="*", help="config names (default: every shipped config)")
    parser.add_argument("--no-largest-latent", action="store_true",
                        help="skip the search for L and the split latent rows")
    parser.add_argument("--out", default=os.path.join(HERE, "tpu_slices.json"))
    parser.add_argument("--from", dest="source", help="reprint the tables of this JSON file")
    args = parser.parse_args()
    if args.source:
        with open(args.source) as f:
            record = json.load(f)
    else:
        names = args.configs or shipped_configs()
        rows = []
        for name in names:
            rows.append(config_row(name, args.topology))
            print(f"{name}: done", file=sys.stderr)
        largest = ([] if args.no_largest_latent else
                   [largest_latent(d, a, args.topology, log=lambda line: print(line, file=sys.stderr))
                    for d, a in VARIANTS])
        split = [] if args.no_largest_latent else [split_row(m, args.topology) for m in SPLIT_LATENT[1]]
        record = {"topology": args.topology, "configs": rows, "largest_latent": largest,
                  "latent_split": split,
                  "command": " ".join(["python reports/tpu_slices.py", *sys.argv[1:]]),
                  "provenance": provenance.record(extra_packages=("libtpu",))}
        write_json_atomic(args.out, record, indent=2)
        if not args.configs and not args.no_largest_latent:
            readme = os.path.join(ROOT, "README.md")
            replace_section(readme, "tpu_configs", config_table(rows, args.topology))
            replace_section(readme, "tpu_largest_latent", latent_table(largest, args.topology))
            replace_section(readme, "tpu_latent_split", split_table(split, args.topology))
    print("\n".join(config_table(record["configs"], record["topology"])))
    if record["largest_latent"]:
        print()
        print("\n".join(latent_table(record["largest_latent"], record["topology"])))
    if record.get("latent_split"):
        print()
        print("\n".join(split_table(record["latent_split"], record["topology"])))


if __name__ == "__main__":
    main()
