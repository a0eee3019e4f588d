"""Hyperparameter sweeps on the validation split: train each setting, evaluate it, tabulate.

    python reports/sweep.py --config configs/mnist_vsc.py --root workdir/sweeps/vsc_c \
        --set objective.c.value=1,3,10,25,50,100 [--set objective.alpha=0.01,0.05] \
        [--fixed train.num_steps=10000] [--out reports/sweeps/vsc_c.md]

Every combination of the ``--set`` values is trained with ``train.py``'s loop into
``<root>/<key=value,...>`` (a finished run is reused, an interrupted one resumes) and
evaluated with ``vscjax.evaluate`` on the **validation** split (``eval_validation.json``),
never on the test set. The table lists, per setting, the model's own bound on -log p(x), the
fixed-prior exact ELBO, the leak, active dimensions, Jaccard same / different, global and
class-specific dimensions and the linear probe, best bound first; on a data set with known
factors (the shapes) also the MIG and how many global and class factors are captured and
placed (``evaluate.factor_headline``). ``--out`` writes it as Markdown (and the rows as JSON
beside it), and its last line names the commit the runs were trained at (their
summary.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from vscjax import evaluate  # noqa: E402
from vscjax.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from vscjax.config import load_file  # noqa: E402
from vscjax.experiment import RunInterrupted, train_and_evaluate  # noqa: E402
from vscjax.tables import fmt  # noqa: E402
from vscjax.workdir import saved_config, summary_path  # noqa: E402


def parse_value(text: str):
    """A command-line value as int, float, bool, a tuple of ints ("(400,400)", for layer
    sizes) or str (in that order of preference)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if re.fullmatch(r"\(\s*\d+(\s*,\s*\d+)*\s*,?\s*\)", text):
        return tuple(int(v) for v in text.strip("()").split(",") if v.strip())
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_assignments(items: list[str], *, multi: bool) -> dict:
    """``["a.b=1,2", "c=(8,8),(16)"]`` -> {"a.b": [1, 2], "c": [(8, 8), (16,)]} (or
    {"a.b": 1} when not ``multi``): values split at the commas outside parentheses."""
    out = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep:
            raise SystemExit(f"sweep.py: expected key=value, got {item!r}")
        parts = re.findall(r"\([^()]*\)|[^,()]+", values)
        parsed = [parse_value(v) for v in parts] if multi else parse_value(values)
        out[key] = parsed
    return out


def settings(grid: dict) -> list[dict]:
    """Every combination of the grid's values, as dotted-key overrides."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def run_name(setting: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items()) or "base"


def row(name: str, results: dict) -> dict:
    """The table's columns from an eval_validation.json (the names of ``evaluate.headline``)."""
    h = evaluate.headline(results)
    specific = h["specific_count"]
    return dict(setting=name, exact_neg_elbo=h["exact_neg_elbo"],
                fixed_prior_exact_neg_elbo=h["fixed_prior_exact_neg_elbo"], leak=h["leak"],
                expected_active=h["expected_active"], active_count=h["active_count"],
                jaccard_same=h["jaccard_same"], jaccard_different=h["jaccard_different"],
                num_global=h["num_global"],
                classes_with_specific=None if specific is None else sum(1 for n in specific if n),
                probe=h["probe"], factors=evaluate.factor_headline(results))


def _check_same_run(workdir: str, config) -> None:
    """Refuse to reuse a workdir trained under another config (run names hold the swept keys
    only, so two sweeps with other fixed values must not share a --root)."""
    saved = saved_config(workdir)
    if saved is not None and saved != json.loads(config.to_json()):
        raise SystemExit(f"sweep.py: {workdir} holds a run of another config; use another --root")


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table; with known factors in any row, their columns too."""
    with_factors = any(r.get("factors") for r in rows)
    header = ["setting", "bound on -log p(x)", "fixed-prior exact -ELBO", "leak", "expected active",
              "active count", "Jaccard same / diff", "global dims", "classes with a specific dim", "probe"]
    if with_factors:
        header += ["MIG", "global factors captured / placed", "class factors captured / placed"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        cells = [r["setting"], f"{r['exact_neg_elbo']:.2f}", fmt(r["fixed_prior_exact_neg_elbo"], ".2f"),
                 fmt(r["leak"], ".2f"), f"{r['expected_active']:.1f}", f"{r['active_count']:.1f}",
                 f"{fmt(r['jaccard_same'], '.3f')} / {fmt(r['jaccard_different'], '.3f')}",
                 fmt(r["num_global"], "d"), fmt(r["classes_with_specific"], "d"), f"{100 * r['probe']:.1f}%"]
        if with_factors:
            f = r.get("factors")
            cells += ["n/a"] * 3 if not f else [
                f"{f['mig']:.3f}",
                *(f"{f[kind + '_captured']} / {f[kind + '_placed']} of {f[kind + '_total']}"
                  for kind in ("global", "class"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trained_at(workdirs: list[str]) -> str:
    """The line naming the commits the runs were trained at, from the provenance of their
    summary.json (short hashes; "with uncommitted changes" where the checkout differed)."""
    commits, dirty = [], False
    for workdir in workdirs:
        with open(summary_path(workdir)) as f:
            git = json.load(f).get("provenance", {}).get("git") or {}
        commit = (git.get("commit") or "unknown")[:7]
        commits += [commit] if commit not in commits else []
        dirty |= bool(git.get("dirty"))
    return (f"Trained at commit{'s' if len(commits) > 1 else ''}: {', '.join(commits)}"
            + (" (with uncommitted changes)." if dirty else "."))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="base config file")
    parser.add_argument("--root", required=True, help="folder of the runs' workdirs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                        help="a swept key and its values (repeat for a grid)")
    parser.add_argument("--fixed", action="append", default=[], metavar="KEY=V",
                        help="an override applied to every run")
    parser.add_argument("--out", default="", help="write the table here (Markdown; rows as .json)")
    args = parser.parse_args(argv)
    fixed = parse_assignments(args.fixed, multi=False)
    rows, workdirs = [], []
    for setting in settings(parse_assignments(args.set, multi=True)):
        name = run_name(setting)
        workdir = os.path.join(args.root, name)
        workdirs.append(workdir)
        config = load_file(args.config, {**fixed, **setting})
        _check_same_run(workdir, config)
        try:
            results = train_and_evaluate(config, workdir, split="validation", make_plots=False)
        except RunInterrupted as err:
            raise SystemExit(f"sweep.py: {err}") from None
        rows.append(row(name, results))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    rows.sort(key=lambda r: r["exact_neg_elbo"])
    table = markdown(rows)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_text_atomic(args.out, f"Validation split. `python reports/sweep.py "
                                    f"{' '.join(argv or sys.argv[1:])}`\n\n" + table
                                    + f"\n\n{trained_at(workdirs)}\n")
        write_json_atomic(os.path.splitext(args.out)[0] + ".json", rows, indent=1)


if __name__ == "__main__":
    main()
