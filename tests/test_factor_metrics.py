"""Factor metrics against hand-worked cases: normalised MI, binning, MIG, DCI, placement."""

import json
import math
import re

import numpy as np
import pytest

from vscjax import factor_metrics as fm
from vscjax import metrics


def _grid(*sizes, repeat=1):
    """Every combination of factors taking 1..size values: [prod(sizes) * repeat, len(sizes)]."""
    axes = np.meshgrid(*[np.arange(1.0, n + 1) for n in sizes], indexing="ij")
    return np.tile(np.stack([a.ravel() for a in axes], axis=1), (repeat, 1))


# ----------------------------------------------------------------------------- mutual information


def test_a_dimension_equal_to_a_factor_has_normalised_mi_one_and_the_others_zero():
    """Codes (x, y, constant) of a full x-by-y grid: x and y are independent in the grid, so
    the plug-in MI between x and the y dimension is exactly 0, and a constant says nothing."""
    factors = _grid(5, 4)  # [20, 2]
    codes = np.column_stack([factors, np.full(len(factors), 3.0)])  # [20, 3]
    nmi = fm.normalized_mutual_information(codes, factors, np.zeros(20, int))
    np.testing.assert_allclose(nmi, [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_normalised_mi_of_a_hand_worked_joint():
    """v = (0, 0, 1, 1) against z = (0, 1, 1, 1): the cells (v, z) = (0, 0), (0, 1), (1, 1) have
    probabilities 1/4, 1/4, 1/2, the marginals of z are 1/4 and 3/4, H(v) = log 2."""
    mi = 0.25 * math.log(0.25 / (0.5 * 0.25)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) \
        + 0.5 * math.log(0.5 / (0.5 * 0.75))
    nmi = fm.normalized_mutual_information(np.array([[0.0], [1], [1], [1]]),
                                           np.array([[0.0], [0], [1], [1]]), np.zeros(4, int))
    assert nmi[0, 0] == pytest.approx(mi / math.log(2), abs=1e-12)


def test_an_independent_dimension_has_about_zero_normalised_mi():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 5, (20_000, 1)).astype(float)
    nmi = fm.normalized_mutual_information(rng.normal(size=(20_000, 2)), factors, np.zeros(20_000, int))
    # The plug-in estimator's bias is about (bins - 1)(values - 1) / 2N nats: 0.002 of H(v).
    assert np.all(nmi < 0.01) and np.all(nmi >= 0)


def test_bins_are_equal_width_over_each_dimensions_range():
    codes = np.array([[0.0, 7.0, -1.0], [0.05, 7.0, 3.0], [0.999, 7.0, 1.0], [1.0, 7.0, 0.9]])
    np.testing.assert_array_equal(fm.bin_codes(codes),
                                  [[0, 0, 0], [1, 0, 19], [19, 0, 10], [19, 0, 9]])
    np.testing.assert_array_equal(fm.bin_codes(codes, num_bins=2)[:, 2], [0, 1, 1, 0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        fm.bin_codes(np.array([[0.0], [np.nan]]))


def test_a_constant_dimension_scores_zero_not_nan():
    factors = _grid(3, repeat=4)
    nmi = fm.normalized_mutual_information(np.zeros((12, 2)), factors, np.zeros(12, int))
    np.testing.assert_array_equal(nmi, np.zeros((1, 2)))
    assert fm.mig(nmi) == 0.0


def test_a_class_factor_is_scored_on_its_class_alone():
    """Factor a belongs to class 1; the dimension copies it there and holds huge values in
    class 0. Scored (and binned) on class 1 alone it is a perfect copy; binned over every
    image, class 1's values would share one bin."""
    labels = np.repeat([0, 1], 8)
    a = np.r_[np.full(8, np.nan), np.repeat([1.0, 2, 3, 4], 2)]
    x = np.tile([1.0, 2], 8)  # within class 1, (x, a) is a full grid
    codes = np.column_stack([np.r_[np.linspace(-1e3, 1e3, 8), a[8:]], x])  # [16, 2]
    factors = np.column_stack([x, a])
    np.testing.assert_array_equal(fm.factor_owners(factors, labels), [fm.GLOBAL, 1])
    nmi = fm.normalized_mutual_information(codes, factors, labels)
    assert nmi[1, 0] == pytest.approx(1.0) and nmi[1, 1] == pytest.approx(0.0, abs=1e-12)
    assert nmi[0, 1] == pytest.approx(1.0)


def test_factor_owners_refuse_a_factor_of_part_of_a_class():
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="factor 0 is present in neither"):
        fm.factor_owners(np.array([[1.0], [np.nan], [2.0], [np.nan]]), labels)
    with pytest.raises(ValueError, match="single value"):
        fm.normalized_mutual_information(np.zeros((4, 2)), np.ones((4, 1)), labels)


# ----------------------------------------------------------------------------- MIG and DCI


def test_mig_is_one_for_a_disentangled_code_and_zero_for_copies():
    factors = _grid(4, 3, repeat=2)  # [24, 2]
    labels = np.zeros(len(factors), int)
    disentangled = fm.normalized_mutual_information(factors[:, ::-1], factors, labels)
    assert fm.mig(disentangled) == pytest.approx(1.0)
    copies = fm.normalized_mutual_information(factors[:, [0, 0, 1, 1]], factors, labels)
    assert fm.mig(copies) == pytest.approx(0.0, abs=1e-12)
    # x copied twice, y once: x's gap is 0, y's 1.
    assert fm.mig(fm.normalized_mutual_information(factors[:, [0, 1, 0]], factors, labels)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fm.mig(np.ones((2, 1)))


@pytest.mark.parametrize("importance, expected", [
    ([[1, 0], [0, 1]], 1.0),  # each dimension serves one factor
    ([[0.5, 0.5], [0.5, 0.5]], 0.0),  # each dimension serves both equally
    ([[1, 0], [0.5, 0.5]], 0.5),  # weights 1/2 and 1/2, scores 1 and 0
    ([[0.2, 0, 0], [0, 0, 0], [0.4, 0.4, 0.8]], 0.2 / 1.8 + 1.6 / 1.8 * (1 - 1.5 * math.log(2) / math.log(3)) ),
    ([[0, 0], [0, 0]], 0.0),  # no dimension predicts anything
])
def test_dci_disentanglement_of_hand_worked_importances(importance, expected):
    """The third dimension of the fourth case: P = (1/4, 1/4, 1/2), H = 1.5 log 2 nats, base 3."""
    assert fm.dci_disentanglement(np.array(importance, float)) == pytest.approx(expected, abs=1e-12)


def test_dci_is_one_for_a_permuted_code_and_low_for_a_mixed_one():
    """A permutation of the factors: each regressor uses its factor's dimension alone. A
    Hadamard mix of the standardised factors: every dimension holds every factor with the same
    weight, and every factor needs all four dimensions."""
    factors = _grid(5, 4, 4, 3, repeat=2)  # [480, 4]
    labels = np.zeros(len(factors), int)
    permuted = fm.importance_matrix(factors[:, [2, 0, 3, 1]], factors, labels)
    np.testing.assert_allclose(permuted, np.eye(4)[[2, 0, 3, 1]], atol=1e-6)
    assert fm.dci_disentanglement(permuted) == pytest.approx(1.0, abs=1e-6)
    standard = (factors - factors.mean(0)) / factors.std(0)
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2
    mixed = fm.importance_matrix(standard @ hadamard, factors, labels)
    assert fm.dci_disentanglement(mixed) < 0.05


# ----------------------------------------------------------------------------- placement


def test_placement_of_hand_built_cases():
    """Factors: global in a global dim; global in a class-0 dim; class 1's in class 1's dim;
    class 1's in a global dim; one whose best MI is below 0.3."""
    nmi = np.array([[0.9, 0.1, 0.0, 0.0],
                    [0.2, 0.6, 0.0, 0.0],
                    [0.0, 0.0, 0.7, 0.3],
                    [0.5, 0.0, 0.1, 0.0],
                    [0.0, 0.29, 0.0, 0.0]])
    owners = np.array([fm.GLOBAL, fm.GLOBAL, 1, 1, 0])
    kinds = np.array([fm.GLOBAL, 0, 1, fm.NEITHER])
    rows = fm.placement(nmi, owners, kinds)
    assert [r["best_dim"] for r in rows] == [0, 1, 2, 0, 1]
    assert [r["captured"] for r in rows] == [True, True, True, True, False]
    assert [r["placed"] for r in rows] == [True, False, True, False, False]
    assert [r["second_nmi"] for r in rows] == [0.1, 0.2, 0.3, 0.1, 0.0]


def test_dimension_kinds_from_activation_frequencies():
    freq = np.array([[0.5, 0.9, 0.0, 0.6, 0.49],
                     [0.7, 0.0, 0.0, 0.6, 0.49],
                     [0.5, 0.0, 0.8, 0.1, 0.49]])
    np.testing.assert_array_equal(fm.dimension_kinds(freq), [fm.GLOBAL, 0, 2, fm.NEITHER, fm.NEITHER])
    gamma = np.array([[0.9, 0.1], [0.2, 0.6], [0.51, 0.5]])
    np.testing.assert_array_equal(metrics.activation_frequency(gamma, np.array([0, 0, 1]), 2),
                                  [[0.5, 0.5], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"classes \[2\] have no samples"):
        metrics.activation_frequency(gamma, np.array([0, 0, 1]), 3)


def test_summary_of_a_hand_built_code():
    """Two classes over x (global, 4 values) and their own factors a (class 0) and b (class 1),
    3 values each. Dimension 0 copies x and is on everywhere (global: placed); dimension 1
    copies a and is on in class 0 alone (placed); dimension 2 copies b but is on in both
    classes (global: b captured, not placed); dimension 3 is always off."""
    block = _grid(4, 3, repeat=5)  # [60, 2] (x, own factor)
    labels = np.repeat([0, 1], len(block))
    x = np.r_[block[:, 0], block[:, 0]]
    a = np.r_[block[:, 1], np.full(len(block), np.nan)]
    b = np.r_[np.full(len(block), np.nan), block[:, 1]]
    on = np.ones(len(labels))
    gamma = np.column_stack([on, labels == 0, on, 0 * on]).astype(float)
    mu = np.column_stack([x, np.nan_to_num(a), np.nan_to_num(b), on])
    summary = fm.factor_summary(gamma, mu, labels, np.column_stack([x, a, b]), ("x", "a", "b"),
                                num_classes=2)
    json.dumps(summary)  # plain values only
    table = {r["name"]: r for r in summary["factors"]}
    assert (table["x"]["kind"], table["x"]["class"], table["a"]["class"]) == ("global", None, 0)
    assert [table[n]["best_dim"] for n in "xab"] == [0, 1, 2]
    assert [table[n]["nmi"] for n in "xab"] == pytest.approx([1, 1, 1])
    assert [table[n]["placed"] for n in "xab"] == [True, True, False]
    assert summary["counts"] == {"global": {"total": 1, "captured": 1, "placed": 1},
                                 "class": {"total": 2, "captured": 2, "placed": 1}}
    assert summary["dimension_kinds"] == [fm.GLOBAL, 0, fm.GLOBAL, fm.NEITHER]
    assert summary["mig"] == pytest.approx(1.0)
    assert summary["dci_disentanglement"] == pytest.approx(1.0, abs=1e-6)
    assert np.shape(summary["normalized_mi"]) == (3, 4)


def test_mismatched_inputs_are_named():
    with pytest.raises(ValueError, match="3 codes, 2 factor rows and 3 labels"):
        fm.normalized_mutual_information(np.zeros((3, 2)), np.zeros((2, 1)), np.zeros(3, int))
    with pytest.raises(ValueError, match="must be"):
        fm.importance_matrix(np.zeros(3), np.zeros((3, 1)), np.zeros(3, int))
    with pytest.raises(ValueError, match="same shape"):
        fm.factor_summary(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(3, int), np.zeros((3, 1)),
                          ("a",), num_classes=1)


FLOOR = re.compile(r"a class's 5-valued factor, scored on its class's images, floor (\S+) on the "
                   r"validation split and (\S+) on the test split; x \(12 values, every image\), "
                   r"floor (\S+) on the validation split and (\S+) on the test split")


def test_the_floor_stated_in_the_docstring_is_what_independent_dimensions_score():
    """Uniform codes independent of every factor, scored against the full shapes grid's
    validation and test splits: the mean normalised MI of the class factors and of x, rounded
    as the module docstring states them (so the statement cannot drift from the grid)."""
    from vscjax import data, shapes

    stated = [float(v) for v in FLOOR.search(" ".join(fm.__doc__.split())).groups()]
    class_factors = [shapes.FACTOR_NAMES.index(name) for name in shapes.CLASS_FACTORS]
    assert (shapes.FULL_GRID.class_values, shapes.FULL_GRID.positions) == (5, 12)  # as stated
    measured = []
    for split in ("validation", "test"):
        dataset = data.load("shapes", "shapes", split)
        codes = np.random.default_rng(0).uniform(size=(len(dataset.labels), 200))  # [N, 200]
        nmi = fm.normalized_mutual_information(codes, dataset.factors, dataset.labels)
        measured.append((nmi[class_factors].mean(), nmi[shapes.FACTOR_NAMES.index("x")].mean()))
    (class_val, x_val), (class_test, x_test) = measured
    assert [round(v, 2) for v in (class_val, class_test, x_val, x_test)] == stated
