"""Metrics of codes on hand-built codes with known answers: Jaccard pairs, class activation,
class overlap, the linear probe."""

import numpy as np
import pytest

from vscjax import metrics

# ----------------------------------------------------------------------------- Jaccard


def test_soft_jaccard_by_hand():
    # min: 0.5 + 0.5 + 0 = 1; max: 1 + 0.5 + 0.5 = 2.
    assert metrics.soft_jaccard([1.0, 0.5, 0.0], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # Active sets {0, 1} and {1, 2}: one shared of three.
    assert metrics.soft_jaccard([True, True, False], [False, True, True]) == pytest.approx(1 / 3)
    assert metrics.soft_jaccard([0.0, 0.0], [0.0, 0.0]) == 1.0  # both empty


def _block_codes(num_classes=3, per_class=4, dims_per_class=2):
    """Every sample of class c has the active set {2c, 2c + 1}: [N, L] bool, [N] labels."""
    labels = np.repeat(np.arange(num_classes), per_class)
    active = np.zeros((len(labels), num_classes * dims_per_class), bool)
    for i, c in enumerate(labels):
        active[i, c * dims_per_class:(c + 1) * dims_per_class] = True
    return active, labels


def test_identical_sets_within_and_disjoint_sets_across_classes():
    active, labels = _block_codes()
    got = metrics.jaccard_pairs(active, labels)
    assert got["all_pairs"]
    assert got["same"] == 1.0 and got["different"] == 0.0
    assert got["same_pairs"] == 3 * 6 and got["different_pairs"] == 66 - 18  # C(4,2) per class
    assert got["ratio"] is None  # same / 0


def test_pairs_with_both_sets_empty_count_as_one():
    active = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]], bool)
    labels = np.array([0, 0, 1, 1])
    got = metrics.jaccard_pairs(active, labels)
    # Same-class pairs: (0, 1) both empty -> 1; (2, 3) {0} vs {} -> 0.
    assert got["same"] == 0.5 and got["same_both_empty"] == 0.5
    # Different-class pairs: (0,2) 0, (0,3) 1, (1,2) 0, (1,3) 1.
    assert got["different"] == 0.5 and got["ratio"] == 1.0


def test_soft_jaccard_pairs_by_hand():
    gamma = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 0, 1])
    got = metrics.jaccard_pairs(gamma, labels)
    same = (0.6 + 0.1) / (0.9 + 0.4)
    different = np.mean([(0.2 + 0.1) / (0.9 + 0.8), (0.2 + 0.4) / (0.6 + 0.8)])
    assert got["same"] == pytest.approx(same)
    assert got["different"] == pytest.approx(different)
    assert got["ratio"] == pytest.approx(same / different)


def test_sampled_pairs_are_of_the_right_kind():
    active, labels = _block_codes(num_classes=5, per_class=30)
    got = metrics.jaccard_pairs(active, labels, num_pairs=3000, all_pairs_limit=0)
    assert not got["all_pairs"] and got["same_pairs"] == got["different_pairs"] == 3000
    assert got["same"] == 1.0 and got["different"] == 0.0  # every pair landed in its kind


def test_sampled_pairs_estimate_the_all_pairs_means():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    # Class-dependent activation rates, so same- and different-class means differ.
    rates = rng.uniform(0.1, 0.9, (4, 30))
    active = rng.random((400, 30)) < rates[labels]
    exact = metrics.jaccard_pairs(active, labels)
    sampled = metrics.jaccard_pairs(active, labels, num_pairs=20_000, seed=1, all_pairs_limit=0)
    assert sampled["same"] == pytest.approx(exact["same"], abs=0.01)
    assert sampled["different"] == pytest.approx(exact["different"], abs=0.01)
    again = metrics.jaccard_pairs(active, labels, num_pairs=20_000, seed=1, all_pairs_limit=0)
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
    freq = metrics.activation_frequency(gamma, labels, 3)
    np.testing.assert_allclose(freq, [[1, 1, 0, 1, 0, 0],
                                      [1, 0, 0.5, 0, 0, 0],
                                      [1, 0, 0, 1, 0, 0.25]])
    got = metrics.shared_and_specific(freq)
    assert got["global_dims"] == [0] and got["num_global"] == 1
    assert got["specific_dims"] == [[1], [2], []]
    assert got["specific_count"] == [1, 1, 0] and got["num_specific"] == 2


def test_activation_frequency_needs_every_class():
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        metrics.activation_frequency(np.ones((3, 2)), np.array([0, 0, 2]), 3)


def test_class_overlap_is_symmetric_with_ones_on_the_diagonal():
    freq = np.array([[1.0, 0.5, 0.0], [0.5, 0.5, 1.0], [0.0, 0.0, 0.0], [0.3, 0.0, 0.7]])
    overlap = metrics.class_overlap(freq)
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
    got = metrics.linear_probe(*codes(300), *codes(300))
    assert got["accuracy"] >= 0.99 and got["converged"]


def test_linear_probe_random_codes_score_chance():
    rng = np.random.default_rng(0)
    train_codes, test_codes = rng.normal(size=(500, 20)), rng.normal(size=(2000, 20))
    got = metrics.linear_probe(train_codes, rng.integers(0, 10, 500), test_codes,
                                rng.integers(0, 10, 2000))
    assert 0.05 < got["accuracy"] < 0.15  # chance is 0.1
