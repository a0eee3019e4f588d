"""Reproduction report: VAE, VSC, the paper's alignment and the class-mask prior, test sets.

    python reports/make_report.py [--root workdir/report] [--skip-large-latent]
    python reports/make_report.py --only shapes                    # the shapes rows alone
    python reports/make_report.py --only fashion_mnist:class_prior # one row
    python reports/make_report.py --from reports/results.json      # rewrite the tables, train nothing

Trains every model of the report with its shipped config (finished runs under --root are
reused, interrupted ones resume), evaluates each once on the **test** split with
``vscjax.evaluate`` (hyperparameters were chosen on the validation split beforehand:
``reports/sweeps/``), and writes the tables between the ``<!-- report:NAME -->`` markers of
``reports/README.md`` (every table) and ``README.md`` (a short summary), the raw rows to
``reports/results.json``, and the figures to ``reports/figures/``. About 3 minutes an MLP model
on 2 CPU cores (12 MNIST-sized models, 5 on the shapes), about 30 minutes for the L=16,384
model, and longer for the conv models on the shapes.

``--only GROUP`` or ``--only GROUP:MODEL`` (repeatable) trains and evaluates those rows alone;
the other rows of results.json stay as they are and the new ones are merged in. ``--from``
rewrites the tables from the rows of an earlier results.json (older files name some numbers
differently: ``OLD_NAMES``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from vscjax import evaluate  # noqa: E402
from vscjax.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from vscjax.config import load_file  # noqa: E402
from vscjax.experiment import RunInterrupted, train_and_evaluate  # noqa: E402
from vscjax.tables import fmt  # noqa: E402
from vscjax.workdir import plots_dir  # noqa: E402

CONFIGS = os.path.join(ROOT, "configs")
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
FASHION = {"data.name": "fashion_mnist"}
# The weights of the paper's alignment loss, chosen on MNIST's validation split (reports/sweeps/).
PAIRWISE = {"objective.align_mode": "pairwise", "objective.align_weight.value": 2.0}
CENTROID = {"objective.align_mode": "centroid", "objective.align_weight.value": 5.0}
# name -> (label, {data set: (config file, overrides)}); every row is one trained model.
MODELS = {
    "vae": ("plain VAE (Gaussian prior)",
            {"mnist": ("mnist_vae.py", {}), "fashion_mnist": ("mnist_vae.py", FASHION)}),
    "vsc": ("VSC (fixed prior)",
            {"mnist": ("mnist_vsc.py", {}), "fashion_mnist": ("fashion_mnist_vsc.py", {})}),
    "centroid": ("VSC + paper's alignment, centroid",
                 {"mnist": ("mnist.py", {}), "fashion_mnist": ("fashion_mnist.py", {})}),
    "pairwise": ("VSC + paper's alignment, pairwise",
                 {"mnist": ("mnist.py", PAIRWISE), "fashion_mnist": ("fashion_mnist.py", PAIRWISE)}),
    "class_prior": ("class-mask prior",
                    {"mnist": ("mnist_class_prior.py", {}),
                     "fashion_mnist": ("fashion_mnist_class_prior.py", {})}),
    "class_prior_align": ("class-mask prior + paper's alignment, centroid",
                          {"mnist": ("mnist_class_prior.py", CENTROID),
                           "fashion_mnist": ("fashion_mnist_class_prior.py", CENTROID)}),
}
LARGE_LATENT = ("large_latent", "class-mask prior, L=16,384", "large_latent.py")
SHAPES = "shapes"
# The synthetic shapes (known factors): name -> (label, config file, overrides).
SHAPES_MLP = {
    "vae": ("plain VAE (Gaussian prior)", "shapes_vae.py", {}),
    "vsc": ("VSC (fixed prior)", "shapes_vsc.py", {}),
    "centroid": ("VSC + paper's alignment, centroid", "shapes_align_centroid.py", {}),
    "pairwise": ("VSC + paper's alignment, pairwise", "shapes_align_pairwise.py", {}),
    "class_prior": ("class-mask prior", "shapes_class_prior.py", {}),
}
# The conv architecture: the same configs, fewer steps (hours on 2 CPU cores otherwise), every
# schedule laid out over them.
CONV_STEPS = 3000
CONV = {"model.architecture": "conv", "train.num_steps": CONV_STEPS,
        "objective.c.end_step": CONV_STEPS}
SHAPES_MODELS = {**{f"{name}": (f"{label}, MLP", file, overrides)
                    for name, (label, file, overrides) in SHAPES_MLP.items()},
                 **{f"{name}_conv": (f"{label}, conv ({CONV_STEPS:,} steps)", file, {**overrides, **CONV})
                    for name, (label, file, overrides) in SHAPES_MLP.items()}}
SHAPES_FIGURES = ("factor_mi.png", "factor_best_dims.png", "class_activation.png", "class_masks.png")
GROUPS = (*DATASETS, LARGE_LATENT[0], SHAPES)
FIGURES = {  # (model, file in the workdir's plots/) copied as figures/<dataset>_<model>_<file>
    ("vsc", "class_activation.png"), ("class_prior", "class_activation.png"),
    ("class_prior", "class_masks.png"), ("class_prior", "factor_traversals.png"),
    ("class_prior_align", "class_activation.png"),
}
# Names that rows of older results.json files give to numbers of evaluate.headline().
OLD_NAMES = {"bound": "exact_neg_elbo", "fixed_prior": "fixed_prior_exact_neg_elbo",
             "confident": "active_count"}


def run_one(config_file: str, overrides: dict, workdir: str) -> dict:
    """Train (or reuse) one model and evaluate it on the test split; eval.json's contents."""
    try:
        return train_and_evaluate(load_file(os.path.join(CONFIGS, config_file), overrides), workdir)
    except RunInterrupted as err:
        raise SystemExit(f"make_report.py: {err}") from None


def current_names(row: dict) -> dict:
    """A row of results.json with every number under its current name (``OLD_NAMES``)."""
    return {OLD_NAMES.get(name, name): value for name, value in row.items()}


def read_results(path: str) -> dict:
    """The rows of a results.json (dataset -> model -> row, and "large_latent" -> row), each
    under the current names of its numbers."""
    with open(path) as f:
        rows = json.load(f)["rows"]
    return {group: current_names(content) if group == LARGE_LATENT[0]
            else {model: current_names(row) for model, row in content.items()}
            for group, content in rows.items()}


def _pair(a, b, spec=".3f"):
    return "n/a" if a is None else f"{fmt(a, spec)} / {fmt(b, spec)}"


def results_table(rows: dict) -> list[str]:
    """Markdown rows of one data set's comparison (rows: label -> evaluate.headline())."""
    lines = ["| model | bound on -log p(x) | fixed-prior exact -ELBO | leak | active count | "
             "Jaccard same / diff | soft Jaccard same / diff | class-specific Jaccard same / diff | "
             "global dims | class-specific dims (classes with one) | probe |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in rows.items():
        spec = r["specific_count"]
        spec_text = "n/a" if spec is None else f"{sum(spec)} ({sum(1 for n in spec if n)}/{len(spec)})"
        lines.append(
            f"| {label} | {r['exact_neg_elbo']:.1f} | {fmt(r['fixed_prior_exact_neg_elbo'], '.1f')} | "
            f"{fmt(r['leak'], '.1f')} | {fmt(r['active_count'], '.1f')} | "
            f"{_pair(r['jaccard_same'], r['jaccard_different'])} | "
            f"{_pair(r['soft_same'], r['soft_different'])} | "
            f"{_pair(r['specific_same'], r['specific_different'])} | {fmt(r['num_global'], 'd')} | "
            f"{spec_text} | {100 * r['probe']:.1f}% |")
    return lines


def summary_table(results: dict) -> list[str]:
    """The README's short table: each model's bound, Jaccard and probe on both data sets, and
    the L=16,384 model's on MNIST (results: dataset -> model -> evaluate.headline())."""
    columns = [f"{DATASETS[d]} {what}" for d in DATASETS
               for what in ("bound", "Jaccard same / diff", "probe")]
    lines = ["| model | " + " | ".join(columns) + " |", "| --- " * (1 + len(columns)) + "|"]

    def cells(r):
        if r is None:
            return ["n/a"] * 3
        return [f"{r['exact_neg_elbo']:.1f}", _pair(r["jaccard_same"], r["jaccard_different"]),
                f"{100 * r['probe']:.1f}%"]

    rows = {label: [results.get(d, {}).get(model) for d in DATASETS] for model, (label, _) in MODELS.items()}
    if LARGE_LATENT[0] in results:
        rows[LARGE_LATENT[1]] = [results[LARGE_LATENT[0]]] + [None] * (len(DATASETS) - 1)
    for label, per_dataset in rows.items():
        if any(r is not None for r in per_dataset):
            lines.append(f"| {label} | " + " | ".join(c for r in per_dataset for c in cells(r)) + " |")
    return lines


def _check(name: str, value: float, target: str, met: bool) -> str:
    return f"| {name} | {value} | {target} | {'met' if met else '**missed**'} |"


def targets_table(results: dict) -> list[str]:
    """Each target against its measured value (results: dataset -> model -> evaluate.headline())."""
    lines = ["| target | measured | goal | |", "| --- | --- | --- | --- |"]
    mnist = results.get("mnist", {})
    if "vsc" in mnist:
        vsc = mnist["vsc"]
        lines.append(_check("MNIST plain VSC: bound on -log p(x)", f"{vsc['exact_neg_elbo']:.1f}", "<= 127",
                            vsc["exact_neg_elbo"] <= 127))
    if "vsc" in mnist and "class_prior" in mnist:
        vsc, cp = mnist["vsc"], mnist["class_prior"]
        same_ratio = cp["jaccard_same"] / vsc["jaccard_same"]
        own_ratio = cp["jaccard_same"] / max(cp["jaccard_different"], 1e-9)
        lines += [
            _check("MNIST class-mask prior: bound", f"{cp['exact_neg_elbo']:.1f}", "<= 115",
                   cp["exact_neg_elbo"] <= 115),
            _check("... same-class Jaccard / plain VSC's", f"{same_ratio:.2f}x", ">= 1.5x",
                   same_ratio >= 1.5),
            _check("... same-class / its different-class Jaccard", f"{own_ratio:.2f}x", ">= 5x",
                   own_ratio >= 5),
            _check("... linear probe", f"{100 * cp['probe']:.1f}%", ">= 95%", cp["probe"] >= 0.95),
            _check("... classes with a class-specific dimension",
                   f"{sum(1 for n in cp['specific_count'] if n)}/{len(cp['specific_count'])}",
                   "every class", all(cp["specific_count"])),
            _check("... global dimensions", str(cp["num_global"]), ">= 1", cp["num_global"] >= 1),
        ]
    fashion = results.get("fashion_mnist", {})
    if "vsc" in fashion and "class_prior" in fashion:
        vsc, cp = fashion["vsc"], fashion["class_prior"]
        ratio = cp["jaccard_same"] / vsc["jaccard_same"]
        lines += [
            _check("Fashion-MNIST class-mask prior: bound vs plain VSC",
                   f"{cp['exact_neg_elbo']:.1f} vs {vsc['exact_neg_elbo']:.1f}", "<= plain VSC",
                   cp["exact_neg_elbo"] <= vsc["exact_neg_elbo"]),
            _check("... same-class Jaccard / plain VSC's", f"{ratio:.2f}x", ">= 2x", ratio >= 2),
        ]
    large = results.get("large_latent")
    if large:
        lines += [
            _check("L=16,384: expected active dims", f"{large['expected_active']:.1f}", ">= 3",
                   large["expected_active"] >= 3),
            _check("L=16,384: linear probe", f"{100 * large['probe']:.1f}%", ">= 93%",
                   large["probe"] >= 0.93),
            _check("L=16,384: bound", f"{large['exact_neg_elbo']:.1f}", "<= 140",
                   large["exact_neg_elbo"] <= 140),
        ]
    return lines


def _placed(f: dict | None, kind: str) -> str:
    return f"{f[kind + '_captured']} / {f[kind + '_placed']} of {f[kind + '_total']}"


def _factor_cell(factor: dict) -> str:
    """A factor's best normalised MI, and where it sits when it is captured."""
    where = ("placed" if factor["placed"] else f"captured ({factor['dimension']} dim)"
             if factor["captured"] else "")
    return f"{factor['nmi']:.2f} {where}".strip()


def shapes_tables(rows: dict) -> dict[str, list[str]]:
    """The Markdown of the shapes sections from their rows (model -> evaluate.headline() with
    evaluate.factor_headline() under "factors"): "shapes" (bound, sparsity, probe, MIG, DCI,
    factors captured / placed by kind), "shapes_factors" (each factor's best normalised MI) and
    "shapes_targets"."""
    labelled = {SHAPES_MODELS[m][0]: r for m, r in rows.items() if m in SHAPES_MODELS}
    main = ["| model | bound on -log p(x) | fixed-prior exact -ELBO | active count | global dims | "
            "class-specific dims (classes with one) | probe | MIG | DCI | global factors captured / placed | "
            "class factors captured / placed |", "|" + " --- |" * 11]
    names = [f["name"] for f in next(iter(labelled.values()))["factors"]["factors"]] if labelled else []
    per_factor = ["| model | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for label, r in labelled.items():
        f, spec = r["factors"], r["specific_count"]
        spec_text = "n/a" if spec is None else f"{sum(spec)} ({sum(1 for n in spec if n)}/{len(spec)})"
        main.append(f"| {label} | {r['exact_neg_elbo']:.1f} | "
                    f"{fmt(r['fixed_prior_exact_neg_elbo'], '.1f')} | "
                    f"{fmt(r['active_count'], '.1f')} | {fmt(r['num_global'], 'd')} | {spec_text} | "
                    f"{100 * r['probe']:.1f}% | {f['mig']:.3f} | {f['dci_disentanglement']:.3f} | "
                    f"{_placed(f, 'global')} | {_placed(f, 'class')} |")
        per_factor.append(f"| {label} | " + " | ".join(_factor_cell(x) for x in f["factors"]) + " |")
    return {"shapes": main, "shapes_factors": per_factor, "shapes_targets": shapes_targets_table(rows)}


def shapes_targets_table(rows: dict) -> list[str]:
    """The class-mask prior's targets on the shapes, per architecture, against plain VSC and the
    paper's alignment (rows: model -> evaluate.headline() with "factors")."""
    lines = ["| target | measured | goal | |", "| --- | --- | --- | --- |"]
    for suffix, arch in (("", "MLP"), ("_conv", "conv")):
        names = [m + suffix for m in ("class_prior", "vsc", "centroid", "pairwise")]
        if not all(name in rows for name in names):
            continue
        cp, vsc, centroid, pairwise = (rows[name] for name in names)
        f = cp["factors"]
        others = {"plain VSC": vsc, "centroid": centroid, "pairwise": pairwise}
        placed = lambda r: r["factors"]["global_placed"] + r["factors"]["class_placed"]  # noqa: E731
        lines += [
            _check(f"Shapes ({arch}) class-mask prior: global factors placed in a global dimension",
                   f"{f['global_placed']}/{f['global_total']}", "every one",
                   f["global_placed"] == f["global_total"]),
            _check("... class factors placed in their class's own dimension",
                   f"{f['class_placed']}/{f['class_total']}", ">= 4", f["class_placed"] >= 4),
            _check("... factors placed, against plain VSC, centroid, pairwise",
                   f"{placed(cp)} vs {', '.join(str(placed(r)) for r in others.values())}",
                   "more than each", all(placed(cp) > placed(r) for r in others.values())),
            _check("... MIG, against plain VSC, centroid, pairwise",
                   f"{f['mig']:.3f} vs " + ", ".join(f"{r['factors']['mig']:.3f}" for r in others.values()),
                   "above each", all(f["mig"] > r["factors"]["mig"] for r in others.values())),
            _check("... bound, against plain VSC",
                   f"{cp['exact_neg_elbo']:.1f} vs {vsc['exact_neg_elbo']:.1f}",
                   "<= plain VSC + 5", cp["exact_neg_elbo"] <= vsc["exact_neg_elbo"] + 5),
        ]
    return lines


def replace_section(path: str, name: str, lines: list[str]) -> None:
    """Put ``lines`` between ``<!-- report:name -->`` and ``<!-- /report:name -->`` in ``path``."""
    with open(path) as f:
        text = f.read()
    pattern = re.compile(rf"(<!-- report:{name} -->\n).*?(<!-- /report:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"make_report.py: {path} has no <!-- report:{name} --> section")
    text = pattern.sub(lambda m: m.group(1) + "\n".join(lines) + "\n" + m.group(2), text)
    write_text_atomic(path, text)


def row_jobs(only: list[str], skip_large_latent: bool) -> list[tuple[str, str]]:
    """(group, model) of every row to train and evaluate: all of the report's (less the
    L=16,384 model with ``skip_large_latent``), or those ``only`` names ("GROUP" or
    "GROUP:MODEL")."""
    every = ([(dataset, model) for dataset in DATASETS for model in MODELS]
             + [(LARGE_LATENT[0], LARGE_LATENT[0])] + [(SHAPES, model) for model in SHAPES_MODELS])
    if not only:
        return [job for job in every if not (skip_large_latent and job[0] == LARGE_LATENT[0])]
    chosen = []
    for item in only:
        group, _, model = item.partition(":")
        if group not in GROUPS:
            raise SystemExit(f"make_report.py: --only {item}: no group {group!r}; the groups are "
                             f"{', '.join(GROUPS)}")
        jobs = [(g, m) for g, m in every if g == group and model in ("", m)]
        if not jobs:
            models = ", ".join(m for g, m in every if g == group)
            raise SystemExit(f"make_report.py: --only {item}: no model {model!r} in {group}; its "
                             f"models are {models}")
        chosen += [job for job in jobs if job not in chosen]
    return chosen


def _row_run(group: str, model: str) -> tuple[str, str, dict, tuple[str, ...]]:
    """(workdir name, config file, overrides, figures to copy) of one row."""
    if group == LARGE_LATENT[0]:
        return group, LARGE_LATENT[2], {}, ("class_activation.png", "class_masks.png")
    if group == SHAPES:
        _, config_file, overrides = SHAPES_MODELS[model]
        figures = SHAPES_FIGURES if model.startswith("class_prior") else SHAPES_FIGURES[:1]
        return f"{SHAPES}_{model}", config_file, overrides, figures
    config_file, overrides = MODELS[model][1][group]
    return f"{group}_{model}", config_file, overrides, tuple(name for m, name in FIGURES if m == model)


def evaluate_rows(root: str, jobs: list[tuple[str, str]]) -> tuple[dict, dict]:
    """Train (or reuse) and evaluate the rows ``jobs`` names, copying their figures.

    Returns:
      (rows: group -> model -> evaluate.headline() (and, on the shapes,
      evaluate.factor_headline() under "factors"), "large_latent" -> its row; the eval.json
      contents of every model, by workdir name).
    """
    figures = os.path.join(HERE, "figures")
    os.makedirs(figures, exist_ok=True)
    results, raw = {}, {}
    for group, model in jobs:
        name, config_file, overrides, plots = _row_run(group, model)
        workdir = os.path.join(root, name)
        raw[name] = run_one(config_file, overrides, workdir)
        row = evaluate.headline(raw[name])
        if group == SHAPES:
            row["factors"] = evaluate.factor_headline(raw[name])
        if group == LARGE_LATENT[0]:
            results[group] = row
        else:
            results.setdefault(group, {})[model] = row
        print(f"{name}: bound {row['exact_neg_elbo']:.2f}", flush=True)
        for plot in plots:
            src = os.path.join(plots_dir(workdir), plot)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(figures, f"{name}_{plot}"))
    return results, raw


def merge_results(path: str, results: dict, raw: dict) -> dict:
    """results.json at ``path`` (if any) with the new rows and their provenance put in: every
    other row stays as it is, under the names it has there. Returns the merged file's contents."""
    merged = {"rows": {}, "provenance": {}}
    if os.path.exists(path):
        with open(path) as f:
            merged = json.load(f)
    for group, content in results.items():
        if group == LARGE_LATENT[0]:
            merged["rows"][group] = content
        else:
            merged["rows"].setdefault(group, {}).update(content)
    merged["provenance"].update({name: value.get("provenance") for name, value in raw.items()})
    return merged


def sections(results: dict) -> dict[str, list[str]]:
    """The Markdown of every ``<!-- report:NAME -->`` section, by NAME, from the rows."""
    out = {dataset: results_table({MODELS[m][0]: r for m, r in results[dataset].items()})
           for dataset in DATASETS}
    if LARGE_LATENT[0] in results:
        out[LARGE_LATENT[0]] = results_table({LARGE_LATENT[1]: results[LARGE_LATENT[0]]})
    out["targets"] = targets_table(results)
    if SHAPES in results:
        out.update(shapes_tables(results[SHAPES]))
    return out


def write_tables(results: dict) -> list[str]:
    """Rewrite the sections of reports/README.md (every table) and README.md's short summary
    (:func:`summary_table`) from the rows; returns the targets tables."""
    tables = sections(results)
    for name, lines in tables.items():
        replace_section(os.path.join(HERE, "README.md"), name, lines)
    replace_section(os.path.join(ROOT, "README.md"), "summary", summary_table(results))
    return tables["targets"] + [""] + tables.get("shapes_targets", [])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join("workdir", "report"))
    parser.add_argument("--skip-large-latent", action="store_true", help="leave out the L=16,384 model")
    parser.add_argument("--only", action="append", default=[], metavar="GROUP[:MODEL]",
                        help=f"train and evaluate these rows alone (groups: {', '.join(GROUPS)}); "
                             "the other rows of results.json are kept")
    parser.add_argument("--from", dest="from_json", metavar="JSON",
                        help="rewrite the tables from the rows of an earlier results.json; train nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        print("\n".join(write_tables(read_results(args.from_json))))
        return
    results, raw = evaluate_rows(args.root, row_jobs(args.only, args.skip_large_latent))
    path = os.path.join(HERE, "results.json")
    write_json_atomic(path, merge_results(path, results, raw), indent=1)
    print("\n".join(write_tables(read_results(path))))


if __name__ == "__main__":
    main()
