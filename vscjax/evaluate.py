"""Evaluate a trained workdir: exact ELBO and leak, sparsity, class consistency, linear probe.

    python -m vscjax.evaluate --workdir W [--split test] [--probe-train 5000] [--pairs 20000]
                              [--iw-samples 0] [--no-plots] [--save-codes]
                              [--coordinator_address H:P --num_processes N --process_id I]

Reads ``W/config.json`` and the newest checkpoint, evaluates on the split (the test set by
default), writes ``W/eval.json`` (``W/eval_<split>.json`` for another split), prints a table
and draws pictures into ``W/plots/``. The words follow docs/design.md, "What the metrics mean":

* **ELBO**: every model's own exact bound on -log p(x) (hard spikes; for the learned priors
  the logsumexp over the mixture's components, no label used) split into recon, slab KL, spike
  KL and component KL; the fixed-prior exact ELBO of the same q and decoder; the class-mask
  prior's label-given bound on -log p(x | y); the regularisers apart, never inside a bound.
  For models trained on the relaxed sample, the relaxed ELBO at the training c (the final
  value of the c schedule) and the leak = exact - relaxed; for straight-through models the
  leak is not applicable (null). The noise is a fixed function of the config's seed, the same
  as the trainer's evaluation, so on the validation split these match ``summary.json``.
* **sparsity**: expected active dims (mean of sum_j gamma_j), active count (mean #{gamma_j > 0.5}).
* **class consistency**: Jaccard of active sets A = {j: gamma_j > 0.5} (1 when both are empty)
  and soft Jaccard sum_j min / sum_j max of gamma, means over same-class and different-class
  pairs, and their ratio (``metrics.jaccard_pairs`` says which pairs); the class-specific
  Jaccard is the Jaccard with the global dimensions removed.
* **class activation**: F[c, j], the fraction of class c's samples with gamma_j > 0.5; global
  and class-specific dimensions; the class overlap matrix (``metrics.class_overlap``).
* **linear probe**: logistic regression on gamma * mu of seeded training images.
* **known factors** (data sets that carry them, such as the synthetic shapes):
  ``factor_metrics.factor_summary`` of the split's code gamma * mu: normalised mutual
  information of every factor and dimension, MIG, DCI disentanglement, and which factors are
  captured (best normalised MI >= ``factor_metrics.CAPTURED``) and placed (in a dimension of
  their kind: global, or their own class's).

Sparsity and class-consistency numbers are stated beside the leak: with a large leak the
model hides information in dimensions whose spikes are off, and those numbers mean little.
A plain VAE (Gaussian prior) has no spikes: every dimension counts as active (gamma = 1), the
spike-only parts are null in eval.json and marked "n/a" in the table, and the probe reads mu.

``--save-codes`` also writes the split's codes and labels to ``W/codes_<split>.npz``
(``codes.save_codes``), for numpy or PyTorch.

This module assembles the report (eval.json), prints its table and is the command line; the
metrics (``vscjax.metrics``), the bounds (``vscjax.bounds``), the codes (``vscjax.codes``) and
the pictures (``vscjax.figures``) live in their own modules. It never imports the training loop.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import sys

import jax
import numpy as np
from flax import nnx

from vscjax import cli, data, evaluation_loop, memory, multihost, objective, provenance, rng, sharding
from vscjax.codes import Codes, encode_images, save_codes
from vscjax.factor_metrics import CAPTURED, GLOBAL, NEITHER, NUM_BINS, factor_summary
from vscjax.figures import draw_evaluation_figures
from vscjax.metrics import (
    ACTIVE_THRESHOLD,
    OVERLAP_DEFINITION,
    activation_frequency,
    class_overlap,
    jaccard_pairs,
    linear_probe,
    shared_and_specific,
)
from vscjax.tables import fmt
from vscjax.trained import restore_model
from vscjax.workdir import codes_path, plots_dir, read_config, results_path, write_results

LEAK_WARNING_NATS = 2.0  # shipped configs keep the leak below this (docs/design.md)


def evaluation_mesh(batch_size: int, latent: int = 1) -> jax.sharding.Mesh:
    """The mesh evaluation runs on: all devices, or with a single process the most of them
    that ``batch_size`` splits over (a run may be evaluated on another machine than its own),
    ``latent`` of them along the latent axis as in training; with fewer devices than
    ``latent``, the parameters are whole on every device."""
    devices = jax.devices()
    latent = latent if len(devices) % latent == 0 else 1
    if jax.process_count() == 1:
        devices = devices[:max(d for d in range(latent, len(devices) + 1, latent)
                               if batch_size % (d // latent) == 0)]
    return sharding.make_mesh(latent, devices)


# ----------------------------------------------------------------------------- the report


# The indices (a, b), score and sampling temporaries of one sampled pair (metrics.jaccard_pairs):
# about six int64 arrays and a float64 one per pair, rounded up.
BYTES_PER_PAIR = 64
BOUND_DEFINITIONS = {
    "fixed": "exact negative ELBO under the fixed prior alpha N(0, 1) + (1 - alpha) delta(0)",
    "class_mask": "-logsumexp_y(log p(y) + ELBO_y(x)), p(y) = 1/C: the class-mask prior as a "
                  "mixture over classes, no label used",
    "pseudo_inputs": "-logsumexp_k(log(1/K) + ELBO_k(x)): the pseudo-input prior as a uniform "
                     "mixture of its K components (training uses the authors' x-dependent "
                     "selector weights, which give no bound)",
    "gaussian": "exact negative ELBO under N(0, I)",
}


def _elbo_section(terms: dict, config, step: int, spikes: bool, iw: np.ndarray | None,
                  iw_samples: int) -> dict:
    mean = lambda name: float(np.mean(terms[name], dtype=np.float64))  # noqa: E731
    prior = config.model.prior
    learned = prior in ("class_mask", "pseudo_inputs")
    relaxed_training = spikes and objective.leak_applies(config.objective)
    return dict(
        exact_neg_elbo=mean("exact_neg_elbo"), bound_definition=BOUND_DEFINITIONS[prior],
        recon=mean("recon"), slab_kl=mean("slab_kl"),
        spike_kl=mean("spike_kl") if spikes else None,
        component_kl=mean("component_kl") if learned else None,
        fixed_prior_exact_neg_elbo=mean("fixed_prior_exact_neg_elbo") if spikes else None,
        class_conditional_neg_elbo=mean("class_conditional_neg_elbo") if prior == "class_mask" else None,
        regularisers={name: mean(name) for name in objective.REGULARISERS} if learned else None,
        relaxed_neg_elbo=mean("relaxed_neg_elbo") if relaxed_training else None,
        leak=mean("leak") if relaxed_training else None,
        c=float(objective.schedule_value(config.objective.c, step)) if spikes else None,
        iw_nll=None if iw is None else float(np.mean(iw, dtype=np.float64)),
        iw_samples=iw_samples)


def _class_sections(codes: Codes, labels: np.ndarray, num_classes: int, pairs: int, seed: list[int],
                    leak) -> tuple[dict | None, dict | None]:
    """The class-consistency and class-activation sections (None for a plain VAE)."""
    if not codes.spikes:
        return None, None
    active = codes.gamma > ACTIVE_THRESHOLD  # [N, L]
    freq = activation_frequency(codes.gamma, labels, num_classes)  # [C, L]
    dims = shared_and_specific(freq)
    not_global = np.setdiff1d(np.arange(active.shape[1]), dims["global_dims"])
    consistency = dict(
        leak=leak,
        jaccard=jaccard_pairs(active, labels, num_pairs=pairs, seed=seed),
        soft_jaccard=jaccard_pairs(codes.gamma, labels, num_pairs=pairs, seed=seed),
        # Global dimensions raise different-class overlap by construction: the same Jaccard
        # with them removed.
        class_specific_jaccard=jaccard_pairs(active[:, not_global], labels, num_pairs=pairs, seed=seed))
    activation = dict(leak=leak, frequency=freq.round(6).tolist(), **dims,
                      overlap=class_overlap(freq).round(6).tolist(),
                      overlap_definition=OVERLAP_DEFINITION)
    return consistency, activation


def _factor_section(codes: Codes, dataset: data.Dataset) -> dict | None:
    """The known-factors section: ``factor_summary`` of the split's code (None for a data set
    whose factors are unknown)."""
    if dataset.factors is None:
        return None
    summary = factor_summary(codes.gamma, codes.mu, dataset.labels, dataset.factors,
                             dataset.factor_names, num_classes=dataset.num_classes)
    return dict(code="gamma * mu" if codes.spikes else "mu", bins=NUM_BINS,
                capture_threshold=CAPTURED,
                definition=f"normalised MI I(v_k; z_j) / H(v_k), z_j binned into {NUM_BINS} "
                           "equal-width bins, a class's factor scored on its class's images; "
                           f"captured: best normalised MI >= {CAPTURED:g}; placed: captured in a "
                           "global dimension (global factor) or one of the factor's class alone",
                **summary)


def _notes(config, spikes: bool, leak, iw_samples: int) -> list[str]:
    notes = []
    if not spikes:
        notes.append("plain VAE (Gaussian prior): no spikes; every dimension counts as active "
                     "(gamma = 1); spike KL, relaxed ELBO, leak, Jaccard and class activation are "
                     "not applicable (null); the probe reads mu")
    if spikes and not objective.leak_applies(config.objective):
        notes.append(f"trained on hard spikes ({config.objective.mask}): no information can pass "
                     "through a dimension whose spike is off, so the leak (exact - relaxed ELBO) "
                     "is not applicable")
    if leak is not None and leak > LEAK_WARNING_NATS:
        notes.append(f"leak {leak:.2f} nats > {LEAK_WARNING_NATS:g}: information passes through "
                     "dimensions whose spikes are off, so the sparsity and class-consistency "
                     "numbers are unreliable")
    return notes


def headline(results: dict) -> dict:
    """The numbers a report row shows, from :func:`evaluate_workdir`'s results (an eval.json):
    the bound (exact -ELBO), the fixed-prior exact -ELBO, the leak, expected active dims and
    the active count, Jaccard pairs, global and class-specific dims and the probe; None where a
    number does not apply to the model. Each number keeps its eval.json name where it has one."""
    e, s = results["elbo"], results["sparsity"]
    cc, act = results["class_consistency"], results["class_activation"]
    pick = lambda name, kind: cc[name][kind] if cc else None  # noqa: E731
    return dict(
        exact_neg_elbo=e["exact_neg_elbo"], fixed_prior_exact_neg_elbo=e["fixed_prior_exact_neg_elbo"],
        leak=e["leak"], expected_active=s["expected_active"], active_count=s["active_count"],
        jaccard_same=pick("jaccard", "same"), jaccard_different=pick("jaccard", "different"),
        soft_same=pick("soft_jaccard", "same"), soft_different=pick("soft_jaccard", "different"),
        specific_same=pick("class_specific_jaccard", "same"),
        specific_different=pick("class_specific_jaccard", "different"),
        num_global=act["num_global"] if act else None,
        specific_count=act["specific_count"] if act else None,
        probe=results["linear_probe"]["accuracy"])


def factor_headline(results: dict) -> dict | None:
    """The known-factor numbers a report row shows, from :func:`evaluate_workdir`'s results (None
    for a data set without known factors): MIG, DCI disentanglement, per kind ("global",
    "class") how many factors there are, are captured and are placed, and per factor its best
    normalised MI, the kind of that dimension (``_dimension_kind``) and whether it is captured
    and placed."""
    section = results.get("factors")
    if section is None:
        return None
    counts = section["counts"]
    return dict(
        mig=section["mig"], dci_disentanglement=section["dci_disentanglement"],
        **{f"{kind}_{what}": counts[kind][what] for kind in counts for what in counts[kind]},
        factors=[dict(name=f["name"], nmi=f["nmi"], captured=f["captured"], placed=f["placed"],
                      dimension=_dimension_kind(section["dimension_kinds"][f["best_dim"]]))
                 for f in section["factors"]])


def evaluate_workdir(workdir: str, *, split: str = "test", probe_train: int = 5000,
                     pairs: int = 20_000, iw_samples: int = 0, make_plots: bool = True,
                     top_k: int = 3, save_split_codes: bool = False) -> dict:
    """Evaluate the newest checkpoint of a train.py workdir; write eval.json and pictures.

    Args:
      workdir: the training run's folder (config.json and checkpoints/).
      split: the data split evaluated ("test").
      probe_train: training images (a seeded sample) the linear probe learns from.
      pairs: pairs of each kind for the Jaccard means when the split has too many to score all.
      iw_samples: K of the importance-sampled NLL bound; 0 skips it.
      make_plots: draw latent traversals, the class activation heatmap and the overlap matrix
        into ``<workdir>/plots``.
      top_k: dimensions traversed per class.
      save_split_codes: write the split's codes and labels to ``workdir.codes_path`` (its path
        is then the results' "codes").

    Returns:
      The results (also written to ``<workdir>/eval.json``, or ``eval_<split>.json``).

    With several processes every process calls it and computes the same results, each feeding
    its own rows of every batch; process 0 alone writes the files.
    """
    _check_counts(probe_train=probe_train, pairs=pairs, iw_samples=iw_samples, top_k=top_k)
    config = read_config(workdir)
    d = config.data
    dataset = data.load(d.source, d.name, split, data_dir=d.dir, mirror=d.mirror)
    train_set = (dataset if split == "train"
                 else data.load(d.source, d.name, "train", data_dir=d.dir, mirror=d.mirror))
    if dataset.labels.max(initial=0) >= train_set.num_classes:
        raise data.DataError(f"{dataset.name}: labels span [{dataset.labels.min()}, {dataset.labels.max()}], "
                             f"outside the {train_set.num_classes} classes of {train_set.name}")
    # A split's class count is the training set's (IDX files give each split its own).
    dataset = dataclasses.replace(dataset, num_classes=train_set.num_classes)
    generator = np.random.default_rng(rng.numpy_seed(config.seed, "probe"))
    probe_idx = np.sort(generator.choice(len(train_set.labels), min(probe_train, len(train_set.labels)),
                                         replace=False))
    if len(np.unique(train_set.labels[probe_idx])) < 2:
        raise data.DataError(f"the linear probe's {len(probe_idx)} training images hold one class; "
                             "use a larger --probe-train")
    batch_size = config.train.eval_batch_size
    mesh = evaluation_mesh(batch_size, config.mesh.latent)
    _check_memory(pairs, iw_samples, batch_size // sharding.data_size(mesh), mesh.devices.flat[0])
    config, graphdef, params, step = restore_model(workdir, dataset.images.shape[1:],
                                                   dataset.num_classes, mesh=mesh)

    terms = evaluation_loop.elbo_terms(graphdef, params, config, dataset.images, dataset.labels,
                                       step=step, mesh=mesh)
    codes = encode_images(graphdef, params, dataset.images, batch_size, mesh)
    iw = (evaluation_loop.iw_bound(graphdef, params, config, dataset.images, iw_samples, mesh)
          if iw_samples > 0 else None)
    elbo = _elbo_section(terms, config, step, codes.spikes, iw, iw_samples)
    leak = elbo["leak"]
    consistency, activation = _class_sections(codes, dataset.labels, dataset.num_classes, pairs,
                                              rng.numpy_seed(config.seed, "pairs"), leak)
    probe_codes = encode_images(graphdef, params, train_set.images[probe_idx], batch_size, mesh)
    results = dict(
        workdir=os.path.abspath(workdir), step=step, split=split, data=dataset.name,
        num_examples=len(dataset.labels), num_classes=dataset.num_classes,
        model=dict(prior=config.model.prior, latent_dim=config.model.latent_dim, spikes=codes.spikes),
        elbo=elbo,
        sparsity=dict(leak=leak, expected_active=float(np.mean(terms["expected_active"])),
                      active_count=float(np.mean(terms["active_count"]))),
        class_consistency=consistency, class_activation=activation,
        factors=_factor_section(codes, dataset),
        linear_probe=dict(code="gamma * mu" if codes.spikes else "mu", train_examples=len(probe_idx),
                          **linear_probe(probe_codes.probe_features, train_set.labels[probe_idx],
                                         codes.probe_features, dataset.labels)),
        notes=_notes(config, codes.spikes, leak, iw_samples),
        provenance=provenance.record())
    model = nnx.merge(graphdef, sharding.local_copy(params))  # this process's own copy
    if config.model.prior == "class_mask":
        results["class_masks"] = np.asarray(model.prior.masks()).round(6).tolist()  # [C, L]
    if multihost.is_writer():
        if make_plots:
            results["plots"] = draw_evaluation_figures(model, codes, dataset.labels, activation,
                                                       plots_dir(workdir), top_k=top_k,
                                                       factors=results["factors"])
        if save_split_codes:
            results["codes"] = save_codes(codes_path(workdir, split), codes, dataset.labels, split)
        write_results(workdir, split, results)
    return results


def _check_counts(**counts: int) -> None:
    """Raise ``ValueError`` naming the first count of :func:`evaluate_workdir` out of range."""
    lowest = {"probe_train": 2, "pairs": 1, "iw_samples": 0, "top_k": 1}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lowest[name]:
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be an integer >= "
                             f"{lowest[name]}, got {value!r}")


def _check_memory(pairs: int, iw_samples: int, local_batch: int, device: jax.Device) -> None:
    """Refuse, before any work, a number of pairs or importance samples whose arrays alone
    cannot fit: the pairs' indices and scores in the host's memory, the importance weights
    [K, local batch] (and K keys) of a batch on a device."""
    pairs_bytes = 2 * pairs * BYTES_PER_PAIR  # same-class and different-class
    if pairs_bytes > memory.host_bytes():
        raise ValueError(f"--pairs {pairs:,} needs {memory.gib(pairs_bytes)} of memory for the "
                         f"sampled pairs, more than this host's {memory.gib(memory.host_bytes())}")
    iw_bytes = iw_samples * (4 * local_batch + 8)
    if iw_bytes > memory.device_bytes(device):
        raise ValueError(f"--iw-samples {iw_samples:,} needs {memory.gib(iw_bytes)} per device for "
                         f"the importance weights of a batch, more than the "
                         f"{memory.gib(memory.device_bytes(device))} a {device.platform} device has")


def format_report(results: dict) -> str:
    """The results as a readable table."""
    e, s, m = results["elbo"], results["sparsity"], results["model"]
    leak = "leak n/a" if e["leak"] is None else f"leak {fmt(e['leak'], '.2f')} nats"
    lines = [
        f"{results['workdir']}: step {results['step']}, {results['data']} ({results['num_examples']} "
        f"images), prior {m['prior']}, L={m['latent_dim']}",
        "",
        f"ELBO (nats per sample; exact = hard spikes, relaxed at the training c={fmt(e['c'], 'g')})",
        f"  exact -ELBO      {e['exact_neg_elbo']:9.2f}   recon {e['recon']:.2f}  slab KL "
        f"{e['slab_kl']:.2f}  spike KL {fmt(e['spike_kl'], '.2f')}"
        + ("" if e["component_kl"] is None else f"  component KL {e['component_kl']:.2f}"),
        f"    = bound on -log p(x): {e['bound_definition']}",
        f"  relaxed -ELBO    {fmt(e['relaxed_neg_elbo'], '9.2f')}   {leak}",
    ]
    if m["prior"] in ("class_mask", "pseudo_inputs"):
        r = e["regularisers"]
        lines.append(f"  fixed-prior exact -ELBO {e['fixed_prior_exact_neg_elbo']:9.2f}   (same q and "
                     f"decoder under the alpha prior)")
        if e["class_conditional_neg_elbo"] is not None:
            lines.append(f"  class-conditional -ELBO {e['class_conditional_neg_elbo']:9.2f}   (bound on "
                         f"-log p(x | y), label given)")
        lines.append("  regularisers (not in any bound): "
                     + ", ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in r.items()))
    if e["iw_nll"] is not None:
        lines.append(f"  IW NLL bound     {e['iw_nll']:9.2f}   (K={e['iw_samples']} hard-spike samples)")
    lines += ["", f"Sparsity ({leak})",
              f"  expected active dims {s['expected_active']:.2f} of {m['latent_dim']}",
              f"  active count (gamma > 0.5) {s['active_count']:.2f}"]
    cc, act = results["class_consistency"], results["class_activation"]
    if cc is not None:
        j = cc["jaccard"]
        pairs = ("all pairs" if j["all_pairs"] else "sampled pairs") + \
            f": {j['same_pairs']:,} same-class, {j['different_pairs']:,} different-class"
        lines += ["", f"Class consistency ({leak}; {pairs})",
                  f"  {'':24}{'same':>8}{'different':>11}{'ratio':>8}"]
        for name in ("jaccard", "soft_jaccard", "class_specific_jaccard"):
            r = cc[name]
            lines.append(f"  {name.replace('_', ' '):24}{fmt(r['same'], '8.3f')}"
                         f"{fmt(r['different'], '11.3f')}{fmt(r['ratio'], '8.2f')}")
        if j["same_both_empty"] or j["different_both_empty"]:
            lines.append(f"  pairs with both active sets empty (Jaccard 1): "
                         f"{fmt(j['same_both_empty'], '.1%')} same-class, "
                         f"{fmt(j['different_both_empty'], '.1%')} different-class")
        per_class = " ".join(f"{c}:{n}" for c, n in enumerate(act["specific_count"]))
        overlap = np.asarray(act["overlap"])
        off_diagonal = overlap[~np.eye(len(overlap), dtype=bool)]
        lines += ["", f"Class activation (F[c, j] >= 0.5; {leak})",
                  f"  global dims {act['num_global']}: {act['global_dims']}",
                  f"  class-specific dims {act['num_specific']}, per class {per_class}",
                  f"  class overlap (soft Jaccard of F rows), mean off-diagonal "
                  f"{fmt(float(off_diagonal.mean()) if off_diagonal.size else None, '.3f')}"]
    if results.get("factors") is not None:
        lines += ["", *_factor_lines(results["factors"])]
    p = results["linear_probe"]
    lines += ["", f"Linear probe on {p['code']} ({p['train_examples']} training images): test "
                  f"accuracy {p['accuracy']:.3f} (train {p['train_accuracy']:.3f}"
                  f"{'' if p['converged'] else ', not converged'})"]
    lines += [f"NOTE: {note}" for note in results["notes"]]
    return "\n".join(lines)


def _dimension_kind(kind: int) -> str:
    return "global" if kind == GLOBAL else "neither" if kind == NEITHER else f"class {kind}"


def _factor_lines(section: dict) -> list[str]:
    """The known-factors block of the table: the counts, MIG and DCI, then a line per factor."""
    counts = section["counts"]
    tally = "  ".join(f"{kind} factors captured {counts[kind]['captured']}/{counts[kind]['total']}, "
                      f"placed {counts[kind]['placed']}/{counts[kind]['total']}" for kind in counts)
    lines = [f"Known factors (normalised MI of {section['code']}, {section['bins']} bins; captured: "
             f"MI >= {section['capture_threshold']:g}; placed: in a dimension of its kind)",
             f"  MIG {section['mig']:.3f}  DCI disentanglement {section['dci_disentanglement']:.3f}  {tally}",
             f"  {'factor':18}{'owner':>9}  {'best dim':>8} {'(its kind)':12}{'MI':>7}{'next':>7}"]
    for f in section["factors"]:
        owner = "global" if f["class"] is None else f"class {f['class']}"
        mark = "placed" if f["placed"] else "captured" if f["captured"] else "-"
        kind = _dimension_kind(section["dimension_kinds"][f["best_dim"]])
        lines.append(f"  {f['name']:18}{owner:>9}  {f['best_dim']:8d} {'(' + kind + ')':12}"
                     f"{f['nmi']:7.3f}{f['second_nmi']:7.3f}  {mark}")
    return lines


def main(argv=None) -> None:
    """The command line: evaluate a workdir, print the table."""
    parser = cli.OneLineParser(prog="python -m vscjax.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a train.py workdir")
    parser.add_argument("--split", default="test", help="data split to evaluate (default: test)")
    parser.add_argument("--probe-train", type=int, default=5000,
                        help="training images the linear probe learns from, at least 2 "
                             "(default: 5000)")
    parser.add_argument("--pairs", type=int, default=20_000,
                        help="pairs of each kind sampled for the Jaccard when the split has too "
                             "many to score all, at least 1 (default: 20000)")
    parser.add_argument("--iw-samples", type=int, default=0,
                        help="K of the importance-sampled NLL bound (default: 0, off)")
    parser.add_argument("--no-plots", action="store_true", help="draw no pictures")
    parser.add_argument("--save-codes", action="store_true",
                        help="write the split's codes (mu, logvar, gamma) and labels to "
                             "<workdir>/codes_<split>.npz")
    parser.add_argument("--coordinator_address", help=multihost.FLAG_HELP["coordinator_address"])
    parser.add_argument("--num_processes", type=int, help=multihost.FLAG_HELP["num_processes"])
    parser.add_argument("--process_id", type=int, help=multihost.FLAG_HELP["process_id"])
    parser.add_argument("--heartbeat_timeout", type=int, default=multihost.DEFAULT_HEARTBEAT_TIMEOUT,
                        help=multihost.FLAG_HELP["heartbeat_timeout"])
    args = parser.parse_args(argv)
    try:
        multihost.initialize(args.coordinator_address, args.num_processes, args.process_id,
                             heartbeat_timeout=args.heartbeat_timeout)
        with cli.held_back_background_errors():
            results = evaluate_workdir(args.workdir, split=args.split, probe_train=args.probe_train,
                                       pairs=args.pairs, iw_samples=args.iw_samples,
                                       make_plots=not args.no_plots, save_split_codes=args.save_codes)
    except OSError as err:
        if err.errno is None:  # ours: no config.json, no restorable checkpoint
            sys.exit(f"vscjax.evaluate: {err}")
        sys.exit(f"vscjax.evaluate: {cli.os_error_line(err)}; the files already in the workdir "
                 "are unchanged")
    except ValueError as err:  # bad flags and files: config, data, checkpoints, dataset.json
        sys.exit(f"vscjax.evaluate: {err}")
    if multihost.is_writer():
        print(format_report(results))
        print(f"results in {os.path.abspath(results_path(args.workdir, args.split))}")
        if args.save_codes:
            print(f"codes in {results['codes']}")
    multihost.finish()


if __name__ == "__main__":
    main()
