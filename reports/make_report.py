"""Reproduction report: VAE, VSC, the paper's alignment and the class-mask prior, test sets.

    python reports/make_report.py [--root workdir/report] [--skip-large-latent]

Trains every model of the report with its shipped config (finished runs under --root are
reused, interrupted ones resume), evaluates each once on the **test** split with
``vscjax.evaluate`` (hyperparameters were chosen on the validation split beforehand:
``reports/sweeps/``), and writes the tables between the ``<!-- report:NAME -->`` markers of
``reports/README.md`` and ``README.md``, the raw rows to ``reports/results.json``, and the
figures to ``reports/figures/``. About 3 minutes a model on 2 CPU cores (12 models), plus about
30 minutes for the L=16,384 model.
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

from vscjax import evaluate, train  # noqa: E402
from vscjax.config import load_file  # noqa: E402

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


def run_one(config_file: str, overrides: dict, workdir: str) -> dict:
    """Train (or reuse) one model and evaluate it on the test split; eval.json's contents."""
    config = load_file(os.path.join(CONFIGS, config_file), overrides)
    summary = train.run(config, workdir)
    if "interrupted_at_step" in summary:
        raise SystemExit(f"make_report.py: {workdir} was interrupted; rerun to resume")
    return evaluate.evaluate_workdir(workdir, split="test")


def _f(value, spec=".1f"):
    return "n/a" if value is None else format(value, spec)


def _pair(a, b, spec=".3f"):
    return "n/a" if a is None else f"{_f(a, spec)} / {_f(b, spec)}"


def results_table(rows: dict) -> list[str]:
    """Markdown rows of one data set's comparison (rows: label -> evaluate.headline())."""
    lines = ["| model | bound on -log p(x) | fixed-prior exact -ELBO | leak | confident dims | "
             "Jaccard same / diff | soft Jaccard same / diff | class-specific Jaccard same / diff | "
             "global dims | class-specific dims (classes with one) | probe |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in rows.items():
        spec = r["specific_count"]
        spec_text = "n/a" if spec is None else f"{sum(spec)} ({sum(1 for n in spec if n)}/{len(spec)})"
        lines.append(
            f"| {label} | {r['bound']:.1f} | {_f(r['fixed_prior'])} | {_f(r['leak'])} | "
            f"{_f(r['confident'])} | {_pair(r['jaccard_same'], r['jaccard_different'])} | "
            f"{_pair(r['soft_same'], r['soft_different'])} | "
            f"{_pair(r['specific_same'], r['specific_different'])} | {_f(r['num_global'], 'd')} | "
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
        lines.append(_check("MNIST plain VSC: bound on -log p(x)", f"{vsc['bound']:.1f}", "<= 127", vsc["bound"] <= 127))
    if "vsc" in mnist and "class_prior" in mnist:
        vsc, cp = mnist["vsc"], mnist["class_prior"]
        same_ratio = cp["jaccard_same"] / vsc["jaccard_same"]
        own_ratio = cp["jaccard_same"] / max(cp["jaccard_different"], 1e-9)
        lines += [
            _check("MNIST class-mask prior: bound", f"{cp['bound']:.1f}", "<= 115", cp["bound"] <= 115),
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
            _check("Fashion-MNIST class-mask prior: bound vs plain VSC", f"{cp['bound']:.1f} vs {vsc['bound']:.1f}",
                   "<= plain VSC", cp["bound"] <= vsc["bound"]),
            _check("... same-class Jaccard / plain VSC's", f"{ratio:.2f}x", ">= 2x", ratio >= 2),
        ]
    large = results.get("large_latent")
    if large:
        lines += [
            _check("L=16,384: expected active dims", f"{large['expected_active']:.1f}", ">= 3",
                   large["expected_active"] >= 3),
            _check("L=16,384: linear probe", f"{100 * large['probe']:.1f}%", ">= 93%", large["probe"] >= 0.93),
            _check("L=16,384: bound", f"{large['bound']:.1f}", "<= 140", large["bound"] <= 140),
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
    with open(path, "w") as f:
        f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join("workdir", "report"))
    parser.add_argument("--skip-large-latent", action="store_true", help="leave out the L=16,384 model")
    args = parser.parse_args()
    figures = os.path.join(HERE, "figures")
    os.makedirs(figures, exist_ok=True)
    results, raw = {}, {}
    for dataset, title in DATASETS.items():
        results[dataset] = {}
        for model, (label, variants) in MODELS.items():
            workdir = os.path.join(args.root, f"{dataset}_{model}")
            raw[f"{dataset}_{model}"] = run_one(*variants[dataset], workdir)
            results[dataset][model] = evaluate.headline(raw[f"{dataset}_{model}"])
            print(f"{title}, {label}: bound {results[dataset][model]['bound']:.2f}", flush=True)
        for model, name in FIGURES:
            src = os.path.join(args.root, f"{dataset}_{model}", "plots", name)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(figures, f"{dataset}_{model}_{name}"))
    if not args.skip_large_latent:
        name, label, config_file = LARGE_LATENT
        raw[name] = run_one(config_file, {}, os.path.join(args.root, name))
        results[name] = evaluate.headline(raw[name])
        for plot in ("class_activation.png", "class_masks.png"):
            src = os.path.join(args.root, name, "plots", plot)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(figures, f"{name}_{plot}"))
    for dataset, title in DATASETS.items():
        lines = results_table({MODELS[m][0]: r for m, r in results[dataset].items()})
        replace_section(os.path.join(HERE, "README.md"), dataset, lines)
        replace_section(os.path.join(ROOT, "README.md"), dataset, lines)
    if "large_latent" in results:
        lines = results_table({LARGE_LATENT[1]: results["large_latent"]})
        replace_section(os.path.join(HERE, "README.md"), "large_latent", lines)
        replace_section(os.path.join(ROOT, "README.md"), "large_latent", lines)
    targets = targets_table(results)
    replace_section(os.path.join(HERE, "README.md"), "targets", targets)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump({"rows": results, "provenance": {k: v.get("provenance") for k, v in raw.items()}}, f, indent=1)
    print("\n".join(targets))


if __name__ == "__main__":
    main()
