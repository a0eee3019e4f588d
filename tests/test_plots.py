"""Every picture renders without a display and writes a PNG of the documented pixel size."""

import matplotlib.image
import numpy as np
import pytest

from vscjax import plots


def _read(path):
    """The PNG's pixels [H, W, channels]; fails on an empty or unreadable file."""
    return matplotlib.image.imread(path)


def _decode(z):
    """A stand-in decoder: z [M, L] -> 8x8 grey images whose brightness follows z."""
    level = 1 / (1 + np.exp(-np.asarray(z)[:, :1]))  # [M, 1]
    return np.broadcast_to(level[:, :, None, None], (len(z), 8, 8, 1))


def test_reconstruction_grid(tmp_path):
    images = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    path = plots.reconstruction_grid(images, images[::-1], str(tmp_path / "r.png"), title="t")
    assert _read(path).shape[:2] == (200, 4 * 90)


@pytest.mark.parametrize("relaxed", [{"relaxed_neg_elbo": 11.5}, {}])  # relaxed training, or not
def test_training_curves(tmp_path, relaxed):
    records = [{"split": "train", "step": s, "loss": 50.0 - s} for s in range(0, 40, 10)]
    records.append({"split": "validation", "step": 40, "exact_neg_elbo": 12.0, **relaxed})
    path = plots.training_curves(records, str(tmp_path / "curves.png"))
    assert _read(path).shape[:2] == (320, 500)


@pytest.mark.parametrize("channels", [1, 3])
def test_latent_traversals(tmp_path, channels):
    rows, latent = 5, 6
    codes = np.zeros((rows, latent), np.float32)
    decode = _decode if channels == 1 else (lambda z: np.repeat(_decode(z), 3, axis=-1))
    dims = np.array([0, 1, 2, 0, 5])
    path = plots.latent_traversals(decode, codes, dims, np.linspace(-1, 1, rows),
                                   str(tmp_path / "sub" / "t.png"),
                                   row_labels=[f"row {r}" for r in range(rows)], title="t")
    picture = _read(path)
    width, height = plots.image_rows_size(rows, len(plots.TRAVERSAL_OFFSETS), title="t",
                                          row_labels=[f"row {r}" for r in range(rows)],
                                          column_labels=plots.TRAVERSAL_OFFSETS)
    assert picture.shape[:2] == (height, width)
    assert picture.std() > 0.05  # something was drawn


def test_latent_traversals_sweep_only_the_chosen_dimension(tmp_path):
    swept = []

    def decode(z):
        swept.append(np.array(z))
        return _decode(z)

    codes = np.arange(6, dtype=np.float32).reshape(2, 3) + 10  # [R=2, L=3]
    plots.latent_traversals(decode, codes, np.array([1, 2]), np.array([0.5, -1.0]),
                            str(tmp_path / "t.png"), row_labels=["a", "b"],
                            offsets=np.array([-1.0, 1.0]))
    z = swept[0].reshape(2, 2, 3)  # [R, T, L]
    np.testing.assert_allclose(z[0], [[10, -0.5, 12], [10, 1.5, 12]])
    np.testing.assert_allclose(z[1], [[13, 14, -2.0], [13, 14, 0.0]])


def test_image_rows(tmp_path):
    grid = np.random.default_rng(0).random((3, 10, 8, 8, 1))  # [R, T, H, W, C]
    path = plots.image_rows(grid, str(tmp_path / "rows.png"), row_labels=["a", "b", "c"], title="t")
    picture = _read(path)
    assert picture.shape[:2] == plots.image_rows_size(3, 10, row_labels="abc", title="t")[::-1]
    assert picture.std() > 0.05


def _longest_blank_run(blank: np.ndarray) -> int:
    """The longest run of True in a 1-D array."""
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], blank.astype(int), [0]]))))[::2]
    return int(runs.max(initial=0))


@pytest.mark.parametrize("column_labels", [None, [str(t) for t in range(10)]])
def test_image_rows_have_no_empty_band(tmp_path, column_labels):
    """The samples from the prior (no column labels, one title line, short row labels) fill
    their picture: no band of blank rows above the grid or blank columns beside it wider than
    the margins of the text."""
    grid = np.full((3, 10, 8, 8, 1), 0.5)  # grey images: blank means white
    path = plots.image_rows(grid, str(tmp_path / "rows.png"), row_labels=["fixed prior"] * 3,
                            column_labels=column_labels,
                            title="samples from the fixed prior (decoder mean images)")
    blank = (_read(path)[..., :3] > 0.97).all(axis=-1)  # [H, W] white pixels
    assert _longest_blank_run(blank.all(axis=1)) <= 3 * plots.MARGIN_PX  # rows
    assert _longest_blank_run(blank.all(axis=0)) <= 3 * plots.MARGIN_PX  # columns


@pytest.mark.parametrize("num_dims", [0, 1, 30, 300])
def test_class_activation_heatmap(tmp_path, num_dims):
    rng = np.random.default_rng(0)
    freq = np.zeros((10, 300))
    freq[:, :num_dims] = rng.random((10, num_dims))  # num_dims columns may pass min_freq
    path = plots.class_activation_heatmap(freq, str(tmp_path / "h.png"),
                                          class_names=[f"c{c}" for c in range(10)])
    assert _read(path).shape[:2] == plots.HEATMAP_PX[::-1]


@pytest.mark.parametrize("num_dims", [0, 12, 300])
def test_factor_mi_heatmap(tmp_path, num_dims):
    rng = np.random.default_rng(0)
    nmi = np.zeros((8, 300))
    nmi[:, :num_dims] = rng.random((8, num_dims))  # num_dims columns may pass min_mi
    kinds = rng.integers(-2, 5, 300)
    path = plots.factor_mi_heatmap(nmi, str(tmp_path / "f.png"), factor_names=list("abcdefgh"),
                                   dimension_kinds=kinds)
    assert _read(path).shape[:2] == plots.HEATMAP_PX[::-1]


@pytest.mark.parametrize("num_classes", [3, 10, 40])
def test_class_overlap_matrix(tmp_path, num_classes):
    rng = np.random.default_rng(0)
    overlap = rng.random((num_classes, num_classes))
    overlap = (overlap + overlap.T) / 2
    np.fill_diagonal(overlap, 1.0)
    path = plots.class_overlap_matrix(overlap, str(tmp_path / "o.png"))
    assert _read(path).shape[:2] == plots.OVERLAP_PX[::-1]


def test_pictures_are_small(tmp_path):
    """README-sized: a few tens of KB."""
    rng = np.random.default_rng(0)
    path = plots.class_activation_heatmap(rng.random((10, 200)), str(tmp_path / "h.png"))
    assert 1_000 < (tmp_path / "h.png").stat().st_size < 60_000, path
