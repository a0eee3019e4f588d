"""Reproduction report: VAE, VSC, the paper's alignment and the class-mask prior, test sets.

    python reports/make_report.py [--root workdir/report] [--skip-large-latent]
    python reports/make_report.py --from reports/results.json   # rewrite the tables, train nothing

Trains every model of the report with its shipped config (finished runs under --root are
reused, interrupted ones resume), evaluates each once on the **test** split with
``vscjax.evaluate`` (hyperparameters were chosen on the validation split beforehand:
``reports/sweeps/``), and writes the tables between the ``<!-- report:NAME -->`` markers of
``reports/README.md`` and ``README.md``, the raw rows to ``reports/results.json``, and the
figures to ``reports/figures/``. About 3 minutes a model on 2 CPU cores (12 models), plus about
30 minutes for the L=16,384 model. ``--from`` rewrites the tables from the rows of an earlier
results.json (older files name some numbers differently: ``OLD_NAMES``).
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
            _check("... same-class Jaccard / plain VSC's", f"{same_ratio:.2f}x", ">= 1.5x", same_ratio >= 1.5),
            _check("... same-class / its different-class Jaccard", f"{own_ratio:.2f}x", ">= 5x", own_ratio >= 5),
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
            _check("L=16,384: linear probe", f"{100 * large['probe']:.1f}%", ">= 93%", large["probe"] >= 0.93),
            _check("L=16,384: bound", f"{large['exact_neg_elbo']:.1f}", "<= 140",
                   large["exact_neg_elbo"] <= 140),
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


def evaluate_all(root: str, skip_large_latent: bool) -> tuple[dict, dict]:
    """Train (or reuse) and evaluate every model of the report, copying its figures.

    Returns:
      (rows: dataset -> model -> evaluate.headline(), and "large_latent" -> its row;
      the eval.json contents of every model, by workdir name).
    """
    figures = os.path.join(HERE, "figures")
    os.makedirs(figures, exist_ok=True)
    results, raw = {}, {}
    for dataset, title in DATASETS.items():
        results[dataset] = {}
        for model, (label, variants) in MODELS.items():
            workdir = os.path.join(root, f"{dataset}_{model}")
            raw[f"{dataset}_{model}"] = run_one(*variants[dataset], workdir)
            results[dataset][model] = evaluate.headline(raw[f"{dataset}_{model}"])
            print(f"{title}, {label}: bound {results[dataset][model]['exact_neg_elbo']:.2f}", flush=True)
        for model, name in FIGURES:
            src = os.path.join(plots_dir(os.path.join(root, f"{dataset}_{model}")), name)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(figures, f"{dataset}_{model}_{name}"))
    if not skip_large_latent:
        name, label, config_file = LARGE_LATENT
        raw[name] = run_one(config_file, {}, os.path.join(root, name))
        results[name] = evaluate.headline(raw[name])
        for plot in ("class_activation.png", "class_masks.png"):
            src = os.path.join(plots_dir(os.path.join(root, name)), plot)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(figures, f"{name}_{plot}"))
    return results, raw


def sections(results: dict) -> dict[str, list[str]]:
    """The Markdown of every ``<!-- report:NAME -->`` section, by NAME, from the rows."""
    out = {dataset: results_table({MODELS[m][0]: r for m, r in results[dataset].items()})
           for dataset in DATASETS}
    if LARGE_LATENT[0] in results:
        out[LARGE_LATENT[0]] = results_table({LARGE_LATENT[1]: results[LARGE_LATENT[0]]})
    out["targets"] = targets_table(results)
    return out


def write_tables(results: dict) -> list[str]:
    """Rewrite the sections of reports/README.md (every one) and README.md (all but the
    targets) from the rows; returns the targets table."""
    tables = sections(results)
    for name, lines in tables.items():
        replace_section(os.path.join(HERE, "README.md"), name, lines)
        if name != "targets":
            replace_section(os.path.join(ROOT, "README.md"), name, lines)
    return tables["targets"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join("workdir", "report"))
    parser.add_argument("--skip-large-latent", action="store_true", help="leave out the L=16,384 model")
    parser.add_argument("--from", dest="from_json", metavar="JSON",
                        help="rewrite the tables from the rows of an earlier results.json; train nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        print("\n".join(write_tables(read_results(args.from_json))))
        return
    results, raw = evaluate_all(args.root, args.skip_large_latent)
    targets = write_tables(results)
    write_json_atomic(os.path.join(HERE, "results.json"),
                      {"rows": results, "provenance": {k: v.get("provenance") for k, v in raw.items()}},
                      indent=1)
    print("\n".join(targets))


if __name__ == "__main__":
    main()
