"""Evaluation metrics on hand-built codes with known answers, and evaluate on a trained workdir."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import numpy_reference as ref
import vscjax
from helpers import check_record, load_config, saved_state
from vscjax import data, evaluate, objective, rng, spike_slab
from vscjax.checkpoints import Checkpoints
from vscjax.config import record_config
from vscjax.models import VSC
from vscjax.state import initial_state

# ----------------------------------------------------------------------------- Jaccard


def test_soft_jaccard_by_hand():
    # min: 0.5 + 0.5 + 0 = 1; max: 1 + 0.5 + 0.5 = 2.
    assert evaluate.soft_jaccard([1.0, 0.5, 0.0], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # Active sets {0, 1} and {1, 2}: one shared of three.
    assert evaluate.soft_jaccard([True, True, False], [False, True, True]) == pytest.approx(1 / 3)
    assert evaluate.soft_jaccard([0.0, 0.0], [0.0, 0.0]) == 1.0  # both empty


def _block_codes(num_classes=3, per_class=4, dims_per_class=2):
    """Every sample of class c has the active set {2c, 2c + 1}: [N, L] bool, [N] labels."""
    labels = np.repeat(np.arange(num_classes), per_class)
    active = np.zeros((len(labels), num_classes * dims_per_class), bool)
    for i, c in enumerate(labels):
        active[i, c * dims_per_class:(c + 1) * dims_per_class] = True
    return active, labels


def test_identical_sets_within_and_disjoint_sets_across_classes():
    active, labels = _block_codes()
    got = evaluate.jaccard_pairs(active, labels)
    assert got["all_pairs"]
    assert got["same"] == 1.0 and got["different"] == 0.0
    assert got["same_pairs"] == 3 * 6 and got["different_pairs"] == 66 - 18  # C(4,2) per class
    assert got["ratio"] is None  # same / 0


def test_pairs_with_both_sets_empty_count_as_one():
    active = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]], bool)
    labels = np.array([0, 0, 1, 1])
    got = evaluate.jaccard_pairs(active, labels)
    # Same-class pairs: (0, 1) both empty -> 1; (2, 3) {0} vs {} -> 0.
    assert got["same"] == 0.5 and got["same_both_empty"] == 0.5
    # Different-class pairs: (0,2) 0, (0,3) 1, (1,2) 0, (1,3) 1.
    assert got["different"] == 0.5 and got["ratio"] == 1.0


def test_soft_jaccard_pairs_by_hand():
    gamma = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 0, 1])
    got = evaluate.jaccard_pairs(gamma, labels)
    same = (0.6 + 0.1) / (0.9 + 0.4)
    different = np.mean([(0.2 + 0.1) / (0.9 + 0.8), (0.2 + 0.4) / (0.6 + 0.8)])
    assert got["same"] == pytest.approx(same)
    assert got["different"] == pytest.approx(different)
    assert got["ratio"] == pytest.approx(same / different)


def test_sampled_pairs_are_of_the_right_kind():
    active, labels = _block_codes(num_classes=5, per_class=30)
    got = evaluate.jaccard_pairs(active, labels, num_pairs=3000, all_pairs_limit=0)
    assert not got["all_pairs"] and got["same_pairs"] == got["different_pairs"] == 3000
    assert got["same"] == 1.0 and got["different"] == 0.0  # every pair landed in its kind


def test_sampled_pairs_estimate_the_all_pairs_means():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    # Class-dependent activation rates, so same- and different-class means differ.
    rates = rng.uniform(0.1, 0.9, (4, 30))
    active = rng.random((400, 30)) < rates[labels]
    exact = evaluate.jaccard_pairs(active, labels)
    sampled = evaluate.jaccard_pairs(active, labels, num_pairs=20_000, seed=1, all_pairs_limit=0)
    assert sampled["same"] == pytest.approx(exact["same"], abs=0.01)
    assert sampled["different"] == pytest.approx(exact["different"], abs=0.01)
    again = evaluate.jaccard_pairs(active, labels, num_pairs=20_000, seed=1, all_pairs_limit=0)
    assert again == sampled  # seeded


# ----------------------------------------------------------------------------- class activation


def _constructed_gamma():
    """C=3 classes of 4 samples, L=6: the activation pattern of each dimension is by design."""
    labels = np.repeat(np.arange(3), 4)
    active = np.zeros((12, 6), bool)
    active[:, 0] = True  # dim 0: every sample -> global
    active[labels == 0, 1] = True  # dim 1: class 0 only -> specific to 0
    active[[4, 5], 2] = True  # dim 2: half of class 1 (F = 0.5 counts) -> specific to 1
    active[(labels == 0) | (labels == 2), 3] = True  # dim 3: classes 0 and 2 -> neither
    active[8, 5] = True  # dim 5: a quarter of class 2 -> not frequent
    gamma = np.where(active, 0.9, 0.2)  # dim 4: never active
    return gamma, labels


def test_activation_frequency_global_and_specific_dimensions():
    gamma, labels = _constructed_gamma()
    freq = evaluate.activation_frequency(gamma, labels, 3)
    np.testing.assert_allclose(freq, [[1, 1, 0, 1, 0, 0],
                                      [1, 0, 0.5, 0, 0, 0],
                                      [1, 0, 0, 1, 0, 0.25]])
    got = evaluate.shared_and_specific(freq)
    assert got["global_dims"] == [0] and got["num_global"] == 1
    assert got["specific_dims"] == [[1], [2], []]
    assert got["specific_count"] == [1, 1, 0] and got["num_specific"] == 2


def test_activation_frequency_needs_every_class():
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        evaluate.activation_frequency(np.ones((3, 2)), np.array([0, 0, 2]), 3)


def test_factor_rows_traverse_global_dims_on_every_class_and_each_class_own_dim():
    freq = np.array([[0.9, 0.8, 0.0, 0.0],
                     [0.7, 0.9, 0.6, 0.0],
                     [0.8, 0.6, 0.0, 0.0]])  # dims 0, 1 global; dim 2 specific to class 1
    activation = dict(frequency=freq.tolist(), **evaluate.shared_and_specific(freq))
    labels = np.array([2, 0, 1, 1, 0, 2])
    gamma = np.zeros((6, 4))
    gamma[3, 2] = 0.9  # the first class-1 image with dim 2 active is sample 3
    codes = evaluate.Codes(mu=np.zeros((6, 4)), logvar=np.zeros((6, 4)), gamma=gamma, spikes=True)
    rows = evaluate.factor_rows(codes, labels, activation, max_global=1)
    # dim 0 (smallest class frequency 0.7) beats dim 1 (0.6); one image of each class.
    assert [(i, j) for i, j, _ in rows] == [(1, 0), (2, 0), (0, 0), (3, 2)]
    assert rows[-1][2] == "class 1 dim 2 (F 0.60)"


def test_class_overlap_is_symmetric_with_ones_on_the_diagonal():
    freq = np.array([[1.0, 0.5, 0.0], [0.5, 0.5, 1.0], [0.0, 0.0, 0.0], [0.3, 0.0, 0.7]])
    overlap = evaluate.class_overlap(freq)
    np.testing.assert_allclose(overlap, overlap.T)
    np.testing.assert_allclose(np.diag(overlap), 1.0)  # an all-zero row too, by convention
    assert overlap[0, 1] == pytest.approx((0.5 + 0.5 + 0.0) / (1.0 + 0.5 + 1.0))
    assert overlap[0, 2] == 0.0


# ----------------------------------------------------------------------------- linear probe


def test_linear_probe_separable_codes_score_one():
    rng = np.random.default_rng(0)
    def codes(n):
        labels = rng.integers(0, 5, n)
        return np.eye(5)[labels] * 3 + 0.1 * rng.normal(size=(n, 5)), labels
    got = evaluate.linear_probe(*codes(300), *codes(300))
    assert got["accuracy"] >= 0.99 and got["converged"]


def test_linear_probe_random_codes_score_chance():
    rng = np.random.default_rng(0)
    train_codes, test_codes = rng.normal(size=(500, 20)), rng.normal(size=(2000, 20))
    got = evaluate.linear_probe(train_codes, rng.integers(0, 10, 500), test_codes,
                                rng.integers(0, 10, 2000))
    assert 0.05 < got["accuracy"] < 0.15  # chance is 0.1


# ----------------------------------------------------------------------------- importance sampling


def _mixtures(alpha):
    """Priors for the density-ratio test: fixed, classes sharing a slab, components with their own."""
    one = jnp.zeros((1, 1))
    logits = jnp.array([[2.0, -3.0], [-1.0, 0.5], [0.0, 0.0]])  # [K=3, L=2]
    return {
        "fixed": objective.PriorMixture(one, one, jnp.full((1, 1), np.log(alpha / (1 - alpha))), jnp.zeros(1)),
        "shared_slab": objective.PriorMixture(one, one, logits, jnp.log(jnp.array([0.2, 0.3, 0.5]))),
        # Component variances below q's, so that p / q is bounded and its mean estimable.
        "own_slabs": objective.PriorMixture(jnp.array([[1.0, -1.0], [0.0, 0.5], [-0.5, 0.5]]),
                                            jnp.array([[-0.5, -1.0], [-0.6, -0.8], [-1.0, -0.5]]),
                                            logits, jnp.log(jnp.full(3, 1 / 3))),
    }


@pytest.mark.parametrize("prior", [None, "fixed", "shared_slab", "own_slabs"])
def test_log_prior_over_posterior_is_a_density_ratio(prior):
    """Under q: E[p / q] = 1 (both are normalised on the mixed measure); for the fixed prior
    (and the VAE) also E[log p / q] = -KL, the closed form."""
    mu, logvar = jnp.array([0.5, -1.0]), jnp.array([0.2, -0.3])  # q wider than N(0, 1/2)
    spikes = prior is not None
    logit = jnp.array([1.0, -0.5]) if spikes else None
    n, alpha = 400_000, 0.3
    if spikes:
        z = spike_slab.sample(jax.random.key(0), jnp.broadcast_to(mu, (n, 2)), logvar, logit,
                              c=1.0, mask="hard")
        kl = spike_slab.kl(mu, logvar, logit, alpha=alpha)
    else:
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.key(0), (n, 2))
        kl = spike_slab.gaussian_kl(mu, logvar)
    mixture = _mixtures(alpha)[prior] if spikes else None
    log_ratio = np.asarray(evaluate.log_prior_over_posterior(z, mu, logvar, logit, mixture))  # [n]
    assert np.mean(np.exp(log_ratio)) == pytest.approx(1.0, abs=0.02)
    if prior in (None, "fixed"):
        assert np.mean(log_ratio) == pytest.approx(-float(kl), abs=0.02)


@pytest.mark.parametrize("prior", ["fixed", "class_mask", "pseudo_inputs"])
def test_iw_bound_is_below_the_models_bound_and_tightens(prior):
    """K = 1 estimates recon + KL(q || p), which for a mixture prior is at most the logsumexp
    bound eval_terms reports (and equal to it for the fixed prior); K = 256 is tighter."""
    model = VSC((8, 8, 1), 6, hidden=(16,), prior=prior, num_classes=3, num_pseudo_inputs=3,
                alpha=0.2, rngs=nnx.Rngs(params=0))
    if prior == "class_mask":  # distinct classes, so the mixture matters
        model.prior.offset[...] = jnp.asarray(np.random.default_rng(1).normal(0, 2, (3, 6)), jnp.float32)
    graphdef, params = nnx.split(model)
    x = jnp.asarray(np.random.default_rng(0).random((8, 8, 8, 1)) > 0.5, jnp.float32)
    labels = jnp.arange(8, dtype=jnp.int32) % 3

    @jax.jit
    def bounds(params, keys):  # mean exact bound, mean K=1 estimate (one per key), K=256 bound
        model = nnx.merge(graphdef, params)
        elbo = jax.vmap(lambda k: objective.eval_terms(model, x, labels, k, c=100.0, alpha=0.2)["exact"])(keys)

        def iw(k, num):
            return evaluate.iw_neg_log_likelihood(model, x, k, alpha=0.2, num_samples=num)

        return jnp.mean(elbo), jnp.mean(jax.vmap(lambda k: iw(k, 1))(keys)), jnp.mean(iw(keys[0], 256))

    elbo, one, many = bounds(params, jax.random.split(jax.random.key(1), 512))
    if prior == "fixed":
        assert float(one) == pytest.approx(float(elbo), rel=0.01)  # K = 1 is the ELBO in expectation
    else:
        assert float(one) < float(elbo) + 0.01 * abs(float(elbo))
    assert float(many) < float(one) - 0.1


# ----------------------------------------------------------------------------- workdirs


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
                 "sparsity", "class_consistency", "class_activation", "linear_probe", "notes",
                 "provenance", "plots"}


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
    record_config(str(tmp_path), config)
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
