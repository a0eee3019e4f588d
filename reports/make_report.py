"""Reproduction report: plain VAE, VSC and class-aware VSC on MNIST and Fashion-MNIST (L=200).

    python reports/make_report.py [--root workdir/report] [--num-steps 10000]

Trains each model with the shipped configs (finished runs in --root are reused: rerunning
only evaluates), evaluates it with ``vscjax.evaluate``, and writes ``reports/README.md``
(the tables) and ``reports/figures/`` (traversals and class activation heatmaps). About
2-3 minutes a model on 2 CPU cores, 15-20 minutes in all.
"""

import argparse
import os
import shutil

from vscjax import evaluate, train
from vscjax.config import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(os.path.dirname(HERE), "configs")
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
MODELS = {  # name -> (config file, what it is)
    "vae": ("mnist_vae.py", "plain VAE (Gaussian prior)"),
    "vsc": ("mnist_vsc.py", "VSC (spike-and-slab, alpha=0.01)"),
    "class_aware": ("mnist.py", "class-aware VSC (VSC + alignment loss)"),
}
FIGURES = ("latent_traversals.png", "class_activation.png")


def run_one(dataset: str, model: str, root: str, num_steps: int) -> dict:
    """Train (or reuse) one model and evaluate it; returns eval.json's contents."""
    config = load_file(os.path.join(CONFIGS, MODELS[model][0]),
                       {"data.name": dataset, "train.num_steps": num_steps})
    workdir = os.path.join(root, f"{dataset}_{model}")
    train.run(config, workdir)
    return evaluate.evaluate_workdir(workdir)


def _fmt(value, spec=".1f"):
    return "n/a" if value is None else format(value, spec)


def table(dataset: str, results: dict) -> list[str]:
    """Markdown rows of one data set's comparison."""
    rows = [f"### {DATASETS[dataset]}", "",
            "| model | exact -ELBO | recon | KL (slab + spike) | leak | expected active dims | "
            "active (gamma>0.5) | Jaccard same / different (ratio) | linear probe |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, r in results.items():
        e, s, cc = r["elbo"], r["sparsity"], r["class_consistency"]
        kl = e["slab_kl"] + (e["spike_kl"] or 0.0)
        jac = cc["jaccard"] if cc else None
        jac_text = ("n/a (no spikes)" if jac is None else
                    f"{jac['same']:.3f} / {jac['different']:.3f} ({jac['ratio']:.1f}x)")
        rows.append(f"| {MODELS[model][1]} | {e['exact_neg_elbo']:.1f} | {e['recon']:.1f} | {kl:.1f} | "
                    f"{_fmt(e['leak'])} | {_fmt(s['expected_active'])} | {_fmt(s['active_count'])} | "
                    f"{jac_text} | {100 * r['linear_probe']['accuracy']:.1f}% |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join("workdir", "report"))
    parser.add_argument("--num-steps", type=int, default=10_000)
    args = parser.parse_args()
    figures = os.path.join(HERE, "figures")
    os.makedirs(figures, exist_ok=True)
    lines = []
    for dataset in DATASETS:
        results = {model: run_one(dataset, model, args.root, args.num_steps) for model in MODELS}
        lines += table(dataset, results) + [""]
        for model in ("vsc", "class_aware"):
            for name in FIGURES:
                src = os.path.join(args.root, f"{dataset}_{model}", "plots", name)
                if os.path.exists(src):
                    shutil.copy(src, os.path.join(figures, f"{dataset}_{model}_{name}"))
    with open(os.path.join(HERE, "tables.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
