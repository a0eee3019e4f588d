"""vscjax.evaluate on trained workdirs: eval.json against numbers recomputed from scratch, the
table, the command line and the exported codes."""

import json
import os
import re

import jax
import numpy as np
import pytest

import numpy_reference as ref
import vscjax
from helpers import check_record, load_config, saved_state
from vscjax import data, evaluate, rng
from vscjax.checkpoints import Checkpoints
from vscjax.state import initial_state
from vscjax.workdir import write_config

ALPHA = 0.5


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A workdir of a 60-step tiny training run (plots off): alpha 0.5 for codes with several
    active dimensions, evaluation batches of 128 that leave the last batch of a split padded."""
    from vscjax import train

    workdir = tmp_path_factory.mktemp("trained")
    train.run(load_config("tiny", train__num_steps=60, train__eval_batch_size=128, objective__alpha=ALPHA),
              str(workdir))
    return workdir


EXPECTED_KEYS = {"workdir", "step", "split", "data", "num_examples", "num_classes", "model", "elbo",
                 "sparsity", "class_consistency", "class_activation", "factors", "linear_probe",
                 "notes", "provenance", "plots"}


def test_evaluate_a_trained_workdir(trained_workdir):
    results = evaluate.evaluate_workdir(str(trained_workdir), split="validation", iw_samples=4)
    saved = json.load(open(trained_workdir / "eval_validation.json"))
    assert set(saved) == EXPECTED_KEYS and saved["step"] == 60 and saved["split"] == "validation"
    summary = json.load(open(trained_workdir / "summary.json"))
    assert summary["split"] == "validation"
    e = saved["elbo"]
    # The trainer's evaluation loop and noise on the same split: the numbers of summary.json.
    for name in ("exact_neg_elbo", "recon", "slab_kl", "spike_kl"):
        assert e[name] == pytest.approx(summary[name], rel=1e-6), name
    # Trained straight-through (the default): the leak is not applicable.
    assert e["leak"] is None and e["relaxed_neg_elbo"] is None
    assert any("not applicable" in note for note in saved["notes"])
    assert np.isfinite(e["iw_nll"]) and e["iw_samples"] == 4
    assert saved["sparsity"]["leak"] == saved["class_consistency"]["leak"] == e["leak"]
    assert np.array(saved["class_activation"]["frequency"]).shape == (10, 16)
    assert np.array(saved["class_activation"]["overlap"]).shape == (10, 10)
    assert saved["class_consistency"]["jaccard"]["all_pairs"]
    assert 0.0 <= saved["linear_probe"]["accuracy"] <= 1.0
    assert saved["linear_probe"]["train_examples"] == 1317  # all of the digits' training split
    for name in ("latent_traversals.png", "class_activation.png", "class_overlap.png"):
        assert os.path.getsize(trained_workdir / "plots" / name) > 1000, name
    check_record(saved["provenance"])
    assert saved == json.loads(json.dumps(results))
    # The digits carry no known factors: no factors section, no factor table or pictures.
    assert saved["factors"] is None and "Known factors" not in evaluate.format_report(results)
    assert not os.path.exists(trained_workdir / "plots" / "factor_mi.png")


def _pair_means(score, labels):
    """Means of a [N, N] pair score over same-class and different-class pairs a < b."""
    upper = np.triu(np.ones_like(score, bool), k=1)
    same = labels[:, None] == labels[None, :]
    return score[upper & same].mean(), score[upper & ~same].mean()


def _jaccard_matrix(active):
    """|A_a & A_b| / |A_a | A_b| for every pair of boolean rows, 1 where both are empty."""
    a = active.astype(np.float64)
    inter = a @ a.T
    union = a.sum(1)[:, None] + a.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def test_eval_json_agrees_with_metrics_recomputed_from_our_own_codes(trained_workdir):
    """eval.json of the test split against the same metrics computed here from scratch: the
    checkpoint read by orbax alone, the split encoded in float64 NumPy, the ELBO with the
    evaluation stream's noise, the metrics with NumPy and the probe with scikit-learn."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    evaluate.evaluate_workdir(str(trained_workdir), probe_train=10_000, make_plots=False)
    saved = json.load(open(trained_workdir / "eval.json"))
    p = ref.params_of(saved_state(trained_workdir)["params"])
    test, train_split = (data.load("digits", "digits", split) for split in ("test", "train"))
    labels = test.labels
    mu, logvar, logit = ref.encode(p, test.images)
    gamma = ref.sigmoid(logit)

    # ELBO: batches of 128 (the last one padded), batch i's noise from fold_in(eval stream, i).
    exact = []
    for i, start in enumerate(range(0, len(labels), 128)):
        key_eta, key_eps = jax.random.split(jax.random.fold_in(rng.key(0, "eval"), i))
        rows = slice(start, start + 128)
        n = len(labels[rows])
        eta = np.asarray(jax.random.uniform(key_eta, (128, 16)), np.float64)[:n]
        eps = np.asarray(jax.random.normal(key_eps, (128, 16)), np.float64)[:n]
        slab = mu[rows] + np.exp(0.5 * logvar[rows]) * eps
        kl = np.sum(gamma[rows] * ref.gaussian_kl(mu[rows], logvar[rows])
                    + ref.bernoulli_kl(logit[rows], ref.logit(ALPHA)), -1)
        z = ref.spike_mask(logit[rows], eta, 10.0, "hard") * slab
        exact.append(ref.reconstruction_nll(p, z, test.images[rows]) + kl)
    e = saved["elbo"]
    assert e["exact_neg_elbo"] == pytest.approx(np.concatenate(exact).mean(), rel=1e-5)
    assert e["relaxed_neg_elbo"] is None  # trained straight-through: no leak to report

    # Sparsity, Jaccard over all pairs, class activation.
    active = gamma > 0.5
    assert active.sum(1).mean() > 2  # codes worth comparing
    assert saved["sparsity"]["expected_active"] == pytest.approx(gamma.sum(1).mean(), rel=1e-5)
    assert saved["sparsity"]["active_count"] == pytest.approx(active.sum(1).mean(), rel=1e-6)
    freq = np.stack([active[labels == c].mean(0) for c in range(10)])  # [C, L]
    act = saved["class_activation"]
    np.testing.assert_allclose(act["frequency"], freq, atol=1e-6)
    global_dims = np.flatnonzero((freq >= 0.5).all(0))
    assert act["global_dims"] == global_dims.tolist()
    owners = (freq >= 0.5).sum(0) == 1
    assert act["specific_dims"] == [np.flatnonzero(owners & (freq[c] >= 0.5)).tolist() for c in range(10)]
    union = np.maximum(freq[:, None], freq[None]).sum(-1)
    overlap = np.minimum(freq[:, None], freq[None]).sum(-1) / np.where(union > 0, union, 1.0)
    np.testing.assert_allclose(act["overlap"], np.where(union > 0, overlap, 1.0), atol=1e-6)
    soft = np.minimum(gamma[:, None], gamma[None]).sum(-1) / np.maximum(gamma[:, None], gamma[None]).sum(-1)
    not_global = np.setdiff1d(np.arange(16), global_dims)
    cc = saved["class_consistency"]
    for name, score in (("jaccard", _jaccard_matrix(active)), ("soft_jaccard", soft),
                        ("class_specific_jaccard", _jaccard_matrix(active[:, not_global]))):
        same, different = _pair_means(score, labels)
        assert cc[name]["all_pairs"] and cc[name]["same_pairs"] == sum(
            n * (n - 1) // 2 for n in np.bincount(labels))
        assert cc[name]["same"] == pytest.approx(same, rel=1e-6), name
        assert cc[name]["different"] == pytest.approx(different, rel=1e-6), name

    # The probe: every training image (probe_train exceeds them), features gamma * mu.
    train_mu, _, train_logit = ref.encode(p, train_split.images)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(ref.sigmoid(train_logit) * train_mu, train_split.labels)
    lp = saved["linear_probe"]
    assert lp["train_examples"] == len(train_split.labels)
    # float64 codes against float32 ones: at most one image classified differently.
    assert abs(lp["accuracy"] - probe.score(gamma * mu, labels)) * len(labels) <= 1 + 1e-9
    train_accuracy = probe.score(ref.sigmoid(train_logit) * train_mu, train_split.labels)
    assert abs(lp["train_accuracy"] - train_accuracy) * len(train_split.labels) <= 1 + 1e-9


def test_class_mask_workdir_reports_its_mixture_bound_and_masks(tmp_path):
    from vscjax import train

    config = load_config("tiny", model__prior="class_mask", train__num_steps=10,
                         objective__class_prior_penalty=0.03)
    train.run(config, str(tmp_path))
    results = evaluate.evaluate_workdir(str(tmp_path), probe_train=200, iw_samples=2)
    e = results["elbo"]
    assert "logsumexp_y" in e["bound_definition"]
    parts = e["recon"] + e["slab_kl"] + e["spike_kl"] + e["component_kl"]
    assert e["exact_neg_elbo"] == pytest.approx(parts, rel=1e-5)
    # The label-free bound pays at most log C over the label-given one.
    assert e["exact_neg_elbo"] <= e["class_conditional_neg_elbo"] + np.log(10) + 1e-3
    assert e["regularisers"]["class_prior_penalty"] >= 0 and np.isfinite(e["fixed_prior_exact_neg_elbo"])
    assert np.array(results["class_masks"]).shape == (10, 16)
    assert os.path.getsize(tmp_path / "plots" / "class_masks.png") > 1000
    for words in ("fixed-prior exact -ELBO", "class-conditional -ELBO", "regularisers (not in any bound)",
                  "class specific jaccard"):
        assert words in evaluate.format_report(results), words


def _normalised_mi(factor: np.ndarray, code: np.ndarray) -> float:
    """I(v; z) / H(v) in float64 from a 2-D histogram: z in 20 equal-width bins over its range,
    v's distinct values as rows (numpy's histogram puts the maximum in the last bin)."""
    values, v = np.unique(factor, return_inverse=True)
    joint, _, _ = np.histogram2d(v, code, bins=[len(values), 20],
                                 range=[[-0.5, len(values) - 0.5], [code.min(), code.max()]])
    p = joint / joint.sum()
    outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
    mi = np.sum(p[p > 0] * np.log(p[p > 0] / outer[p > 0]))
    pv = p.sum(1)
    return mi / -np.sum(pv * np.log(pv))


def test_known_factors_section_is_the_summary_of_the_saved_codes(tmp_path, capsys):
    """A class-mask run on a small shapes grid, evaluated on validation with its codes saved:
    eval.json's factors section is factor_summary of those codes against the split's factors
    (recomputed here), one normalised MI checked again from a plain 2-D histogram; the table
    shows the block and the pictures include the MI heatmap and the best-dimension traversals."""
    from vscjax import factor_metrics, shapes, train

    config = load_config("tiny", data__source="shapes", data__name="shapes-3", train__num_steps=10,
                         train__batch_size=40, data__balanced=True, model__prior="class_mask",
                         objective__alpha=0.5)
    train.run(config, str(tmp_path))
    evaluate.main(["--workdir", str(tmp_path), "--split", "validation", "--probe-train", "200",
                   "--save-codes"])
    out = capsys.readouterr().out
    saved = json.load(open(tmp_path / "eval_validation.json"))
    codes = np.load(tmp_path / "codes_validation.npz")
    validation = data.load("shapes", "shapes-3", "validation")
    np.testing.assert_array_equal(codes["labels"], validation.labels)
    expected = factor_metrics.factor_summary(codes["gamma"], codes["mu"], validation.labels,
                                             validation.factors, validation.factor_names,
                                             num_classes=5)
    section = saved["factors"]
    assert {k: section[k] for k in expected} == json.loads(json.dumps(expected))
    assert (section["code"], section["bins"], section["capture_threshold"]) == ("gamma * mu", 20, 0.3)
    assert [f["name"] for f in section["factors"]] == list(shapes.FACTOR_NAMES)
    ring = shapes.FACTOR_NAMES.index("ring_hole")
    rows = validation.labels == shapes.CLASSES.index("ring")
    z = (codes["gamma"] * codes["mu"]).astype(np.float64)  # [N, L]
    j = section["factors"][ring]["best_dim"]
    assert section["normalized_mi"][ring][j] == pytest.approx(
        _normalised_mi(validation.factors[rows, ring], z[rows, j]), abs=1e-9)
    assert "Known factors" in out and "ring_hole" in out and "DCI disentanglement" in out
    for name in ("factor_mi.png", "factor_best_dims.png"):
        assert os.path.getsize(tmp_path / "plots" / name) > 1000, name


def test_cli_prints_the_table(trained_workdir, capsys):
    evaluate.main(["--workdir", str(trained_workdir), "--no-plots", "--probe-train", "200"])
    out = capsys.readouterr().out
    for words in ("exact -ELBO", "relaxed -ELBO", "leak", "expected active dims", "jaccard",
                  "global dims", "Linear probe on gamma * mu (200 training images)"):
        assert words in out, words


def test_cli_saves_the_splits_codes_for_numpy_and_torch(trained_workdir, capsys):
    evaluate.main(["--workdir", str(trained_workdir), "--split", "validation", "--no-plots",
                   "--probe-train", "100", "--save-codes"])
    path = re.search(r"^codes in (.+)$", capsys.readouterr().out, re.M).group(1)
    assert path == str(trained_workdir / "codes_validation.npz")
    saved = np.load(path)  # no pickle needed
    assert set(saved.files) == {"mu", "logvar", "gamma", "labels", "split"}
    assert str(saved["split"]) == "validation"
    validation = data.load("digits", "digits", "validation")
    np.testing.assert_array_equal(saved["labels"], validation.labels)
    codes = vscjax.load(str(trained_workdir)).encode(validation.images)
    for name in ("mu", "logvar", "gamma"):
        assert saved[name].shape == (len(validation.labels), 16) and saved[name].dtype == np.float32
        np.testing.assert_allclose(saved[name], getattr(codes, name), rtol=1e-5, atol=1e-6)
    torch = pytest.importorskip("torch")
    assert torch.allclose(torch.from_numpy(saved["gamma"]), torch.tensor(codes.gamma), atol=1e-6)
    assert json.load(open(trained_workdir / "eval_validation.json"))["codes"] == path


def test_cli_names_a_missing_workdir(tmp_path):
    with pytest.raises(SystemExit, match="no config.json"):
        evaluate.main(["--workdir", str(tmp_path)])


def _untrained_workdir(tmp_path, config) -> None:
    """A workdir holding ``config`` and its untrained state (digits images), as train.py writes it."""
    _, state, _ = initial_state(config, (8, 8, 1), 10)
    write_config(str(tmp_path), config)
    checkpoints = Checkpoints(str(tmp_path), config)
    checkpoints.save(state, force=True)
    checkpoints.close()


def test_relaxed_training_reports_the_leak(tmp_path):
    """An untrained checkpoint of a model trained on the relaxed sample: the leak is reported."""
    _untrained_workdir(tmp_path, load_config("tiny", objective__mask="relaxed", objective__align_mode="off"))
    e = evaluate.evaluate_workdir(str(tmp_path), probe_train=200, make_plots=False)["elbo"]
    assert e["leak"] == pytest.approx(e["exact_neg_elbo"] - e["relaxed_neg_elbo"], abs=1e-3)


def test_plain_vae_treats_every_dimension_as_active(tmp_path):
    """An untrained Gaussian-prior checkpoint (no training needed): spike parts are null."""
    _untrained_workdir(tmp_path, load_config("tiny", model__prior="gaussian", objective__align_mode="off"))
    results = evaluate.evaluate_workdir(str(tmp_path), probe_train=200, iw_samples=2)
    e = results["elbo"]
    assert e["spike_kl"] is e["leak"] is e["relaxed_neg_elbo"] is None and np.isfinite(e["iw_nll"])
    assert results["sparsity"]["expected_active"] == results["sparsity"]["active_count"] == 16
    assert results["class_consistency"] is None and results["class_activation"] is None
    assert results["linear_probe"]["code"] == "mu"
    assert [os.path.basename(p) for p in results["plots"]] == ["latent_traversals.png"]
    assert "plain VAE" in results["notes"][0]
    assert "n/a" in evaluate.format_report(results)


def test_evaluation_mesh_uses_the_devices_that_split_the_batch():
    assert evaluate.evaluation_mesh(96).devices.size == 8
    assert evaluate.evaluation_mesh(100).devices.size == 5  # a run evaluated on another machine
