"""Ground-truth factor metrics of models trained on the synthetic shapes.

    python reports/shapes_probe.py workdir/shapes_vsc workdir/shapes_class_prior \
        [--split validation] [--out rows.json]

For every workdir (trained with data.source = "shapes") it encodes the split's images with
``vscjax.load(workdir).encode``, scores the code gamma * mu against their known factors
(``vscjax.factor_metrics.factor_summary``: normalised MI, MIG, DCI disentanglement, where each
factor sits) and computes the model's own exact bound on -log p(x) on the same images. It
writes ``<workdir>/factors_<split>.json`` and ``<workdir>/plots/factor_mi_<split>.png`` and
prints a table. Hyperparameters are chosen on the validation split (the default); the test
split is for the report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402

import vscjax  # noqa: E402
from vscjax import data, evaluation_loop, factor_metrics, plots, shapes, sharding  # noqa: E402


def exact_bound(model: vscjax.TrainedModel, dataset: data.Dataset) -> float:
    """The model's own exact (hard-spike) bound on -log p(x), nats per image of ``dataset``,
    with the evaluation noise of the run's seed."""
    mesh = sharding.make_data_mesh()
    params = jax.device_put(model.params, sharding.replicated(mesh))
    terms = evaluation_loop.elbo_terms(model.graphdef, params, model.config, dataset.images,
                                       dataset.labels, step=model.step, mesh=mesh)
    return evaluation_loop.mean_terms(terms)["exact_neg_elbo"]


def probe(workdir: str, split: str) -> dict:
    """The factor metrics and the bound of ``workdir``'s model on ``split``; writes its files.

    Returns:
      ``factor_metrics.factor_summary``'s dict with workdir, split, step, prior and bound.
    """
    model = vscjax.load(workdir)
    d = model.config.data
    if d.source != "shapes":
        raise ValueError(f"{workdir} was trained on data.source = {d.source!r}; the factor "
                         "metrics need the shapes, whose factors are known")
    dataset = data.load(d.source, d.name, split)
    codes = model.encode(dataset.images)
    summary = factor_metrics.factor_summary(codes.gamma, codes.mu, dataset.labels, dataset.factors,
                                            dataset.factor_names, num_classes=dataset.num_classes)
    result = {"workdir": workdir, "split": split, "step": model.step, "prior": model.prior,
              "bound": exact_bound(model, dataset), **summary}
    with open(os.path.join(workdir, f"factors_{split}.json"), "w") as f:
        json.dump(result, f, indent=1)
    plots.factor_mi_heatmap(summary["normalized_mi"],
                            os.path.join(workdir, "plots", f"factor_mi_{split}.png"),
                            factor_names=dataset.factor_names,
                            dimension_kinds=summary["dimension_kinds"],
                            title=f"{os.path.basename(os.path.normpath(workdir))}: normalised MI "
                                  f"of factors and dimensions ({split})")
    return result


def table(results: list[dict]) -> str:
    """One line per model, then each model's factors: best dimension, its kind, MI, second MI."""
    lines = [f"{'workdir':36} {'bound':>8} {'MIG':>6} {'DCI':>6}  global capt/placed  class capt/placed"]
    for r in results:
        g, c = r["counts"]["global"], r["counts"]["class"]
        lines.append(f"{r['workdir'][-36:]:36} {r['bound']:8.2f} {r['mig']:6.3f} "
                     f"{r['dci_disentanglement']:6.3f}  {g['captured']}/{g['placed']} of {g['total']}"
                     f"{'':10}{c['captured']}/{c['placed']} of {c['total']}")
    for r in results:
        lines.append(f"\n{r['workdir']} ({r['split']}, step {r['step']})")
        kinds = r["dimension_kinds"]
        for f in r["factors"]:
            kind = kinds[f["best_dim"]]
            where = ("global" if kind == factor_metrics.GLOBAL
                     else "neither" if kind == factor_metrics.NEITHER else f"{shapes.CLASSES[kind]}'s")
            mark = "placed" if f["placed"] else "captured" if f["captured"] else "-"
            lines.append(f"  {f['name']:16} dim {f['best_dim']:3} ({where:10}) MI {f['nmi']:.3f} "
                         f"next {f['second_nmi']:.3f}  {mark}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="train.py workdirs of shapes models")
    parser.add_argument("--split", default="validation", choices=data.SPLITS)
    parser.add_argument("--out", default="", help="also write every model's results here (JSON)")
    args = parser.parse_args(argv)
    try:
        results = [probe(workdir, args.split) for workdir in args.workdirs]
    except (FileNotFoundError, ValueError) as err:  # DataError and the metrics' errors included
        raise SystemExit(f"shapes_probe.py: {err}") from None
    print(table(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
