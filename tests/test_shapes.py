"""The synthetic shapes: each factor moves the pixels it should (centres of mass and areas
worked by hand), edges against supersampled coverage, the grid, determinism and the splits."""

import hashlib
import os

import numpy as np
import pytest

from helpers import REPO_ROOT, load_config
from vscjax import data, shapes
from vscjax.config import ConfigError, validate

SQUARE, ELLIPSE, TRIANGLE, CROSS, RING = range(5)
K = len(shapes.FACTOR_NAMES)
OWN = len(shapes.GLOBAL_FACTORS)  # column of class 0's own factor
SUBPIXELS = 16  # supersampling of the reference coverage, per pixel side


def _row(label, x, y, scale, own):
    """A factor row of class ``label``: the global factors, its own factor, NaN elsewhere."""
    row = np.full(K, np.nan)
    row[:OWN] = x, y, scale
    row[OWN + label] = own
    return row


def _render(label, *factors):
    """One image [32, 32] of class ``label`` with factors (x, y, scale, own) in float64."""
    return shapes.render(np.array([label]), _row(label, *factors)[None])[0, ..., 0].astype(np.float64)


def _centre_of_mass(image):
    """(x, y) of an image [32, 32] in pixel units, pixel (i, j) at (j + 1/2, i + 1/2)."""
    centres = np.arange(image.shape[0]) + 0.5
    ink = image.sum()
    return (image.sum(axis=0) @ centres) / ink, (image.sum(axis=1) @ centres) / ink


def _area(label, scale, own):
    """The shape's area in square pixels, worked by hand from its definition."""
    s = scale
    return [4 * s**2 - (4 - np.pi) * (own * s) ** 2,  # a square less the four corners' rounding
            np.pi * s * (own * s),  # ellipse, semi-axes s and own * s
            2 * s**2,  # base 2s, height 2s, whatever the apex's shift (a shear)
            2 * (2 * s) * (2 * own * s) - (2 * own * s) ** 2,  # two bars, their square counted once
            np.pi * s**2 * (1 - own**2)][label]  # ring


def _inside(label, x, y, scale, own, px, py):
    """Whether points (px, py) lie in the shape: the definitions as inequalities, no distances."""
    u, v, s = px - x, py - y, scale
    in_square = (np.abs(u) <= s) & (np.abs(v) <= s)
    if label == SQUARE:
        r = own * s
        cu, cv = np.abs(u) - (s - r), np.abs(v) - (s - r)  # past the straight part of both edges
        return in_square & ~((cu > 0) & (cv > 0) & (cu**2 + cv**2 > r**2))
    if label == ELLIPSE:
        return (u / s) ** 2 + (v / (own * s)) ** 2 <= 1
    if label == TRIANGLE:
        t = (v + s) / (2 * s)  # 0 at the apex's height, 1 at the base's
        apex = own * s
        return (np.abs(v) <= s) & (u >= apex + t * (-s - apex)) & (u <= apex + t * (s - apex))
    if label == CROSS:
        w = own * s
        return ((np.abs(u) <= s) & (np.abs(v) <= w)) | ((np.abs(u) <= w) & (np.abs(v) <= s))
    radius = np.hypot(u, v)
    return (radius <= s) & (radius >= own * s)


def _coverage(label, *factors):
    """The covered fraction of every pixel [32, 32], from SUBPIXELS^2 point samples per pixel."""
    points = (np.arange(shapes.IMAGE_SIZE * SUBPIXELS) + 0.5) / SUBPIXELS
    py, px = np.meshgrid(points, points, indexing="ij")
    inside = _inside(label, *factors, px, py)
    return inside.reshape(shapes.IMAGE_SIZE, SUBPIXELS, shapes.IMAGE_SIZE, SUBPIXELS).mean(axis=(1, 3))


# Off-grid factors (x, y, scale, own) of every class, including the ranges' ends.
CASES = [(label, x, y, scale, own)
         for label, name in enumerate(shapes.CLASS_FACTORS)
         for (x, y, scale), own in zip([(10.0, 22.0, 9.0), (13.3, 16.8, 6.1), (21.6, 12.2, 5.0)],
                                       [*shapes.CLASS_FACTOR_RANGES[name], np.mean(shapes.CLASS_FACTOR_RANGES[name])])]


@pytest.mark.parametrize("label, x, y, scale, own", CASES)
def test_ink_is_the_area_and_its_centre_the_shapes(label, x, y, scale, own):
    """The image's total ink is the shape's area, worked by hand (so scale grows it as scale^2,
    and each class's own factor changes it as its formula says), and its centre of mass is the
    shape's centroid: (x, y) for the symmetric shapes; for the triangle a third of the way from
    the base's midpoint (0, s) to the apex (shift * s, -s)."""
    image = _render(label, x, y, scale, own)
    assert image.sum() == pytest.approx(_area(label, scale, own), rel=0.02)
    cx, cy = _centre_of_mass(image)
    if label == TRIANGLE:
        x, y = x + own * scale / 3, y + scale / 3
    assert (cx, cy) == pytest.approx((x, y), abs=0.05)


@pytest.mark.parametrize("label", range(5))
def test_moving_x_or_y_moves_the_ink_and_nothing_else(label):
    """A shift of x moves the centre of mass right by the same amount and y not at all (and the
    reverse), the ink unchanged; a larger scale gives more ink."""
    base = (13.0, 17.0, 6.0, np.mean(shapes.CLASS_FACTOR_RANGES[shapes.CLASS_FACTORS[label]]))
    image = _render(label, *base)
    right = _render(label, base[0] + 1.7, *base[1:])
    down = _render(label, base[0], base[1] + 2.2, *base[2:])
    (x0, y0), (x1, y1), (x2, y2) = map(_centre_of_mass, (image, right, down))
    assert (x1 - x0, y1 - y0) == pytest.approx((1.7, 0.0), abs=0.03)
    assert (x2 - x0, y2 - y0) == pytest.approx((0.0, 2.2), abs=0.03)
    assert right.sum() == pytest.approx(image.sum(), rel=0.02)  # corners: edges cross pixels anew
    assert _render(label, *base[:2], 7.0, base[3]).sum() > image.sum() * 1.2


@pytest.mark.parametrize("label, x, y, scale, own", CASES)
def test_edges_are_the_covered_fraction_of_each_pixel(label, x, y, scale, own):
    """Against the coverage of the shape's definition sampled 16x16 times per pixel: the
    images differ by under 3.5% of their ink (a half-pixel offset of the pixel grid gives
    twice that), and a pixel an edge cuts is grey, not a hard 0 or 1."""
    image = _render(label, x, y, scale, own)
    reference = _coverage(label, x, y, scale, own)
    assert np.abs(image - reference).sum() < 0.035 * reference.sum()
    cut = (reference > 0.1) & (reference < 0.9)
    pixel_aligned = label == SQUARE and own == 0 and all(v == int(v) for v in (x, y, scale))
    assert cut.sum() >= (0 if pixel_aligned else 8)  # edges on pixel borders cut no pixel
    assert np.all((image[cut] > 0) & (image[cut] < 1))
    assert np.all(reference[(image > 0) & (image < 1)] > 0)  # and grey only where an edge is


def test_each_image_records_its_factors_and_only_its_class_factor():
    """A class's images carry x, y, scale and their own class's factor, NaN for the other
    classes' factors; every image is the rendering of its recorded factors, whatever values
    stand in the absent ones; varying its own factor alone changes a class's image."""
    grid = shapes.grid_from_name("shapes-3")
    images, labels, factors = shapes.generate(grid)
    present = ~np.isnan(factors)  # [N, K]
    assert np.all(present[:, :OWN])
    np.testing.assert_array_equal(present[:, OWN:], labels[:, None] == np.arange(5)[None, :])
    filled = np.where(present, factors, 0.37)  # absent factors given a value: no effect
    np.testing.assert_array_equal(shapes.render(labels, filled), images)
    for label in range(5):
        mine = labels == label
        own = factors[mine, OWN + label]
        keys = [tuple(row) for row in factors[mine, :OWN]]
        for key in set(keys):  # one (x, y, scale): its class-factor values give distinct images
            same = [i for i, k in enumerate(keys) if k == key]
            assert len({images[mine][i].tobytes() for i in same}) == len(set(own[same])) == 3


def test_no_two_points_of_the_full_grid_give_the_same_image():
    images, labels, factors = shapes.generate(shapes.FULL_GRID)
    assert len(images) == shapes.FULL_GRID.num_images == 18_000
    assert images.dtype == np.float32 and images.min() == 0.0 and images.max() == 1.0
    # Margins: no ink on the border pixels (up to the distances' float64 rounding, 1e-16).
    assert images[:, [0, -1]].max() < 1e-12 and images[:, :, [0, -1]].max() < 1e-12
    assert len({hashlib.sha1(image.tobytes()).digest() for image in images}) == len(images)
    assert len({row.tobytes() for row in np.nan_to_num(factors, nan=-1.0)}) == len(images)
    assert np.bincount(labels).tolist() == [18_000 // 5] * 5


def test_generation_is_deterministic():
    first = data.load("shapes", "shapes-3", "train")
    second = data.load("shapes", "shapes-3", "train")
    for a, b in [(first.images, second.images), (first.labels, second.labels),
                 (first.factors, second.factors)]:
        np.testing.assert_array_equal(a, b)
        assert a.tobytes() == b.tobytes()


def test_splits_are_disjoint_cover_the_grid_and_keep_their_factors():
    """train, validation and test are disjoint and together the whole grid; each image is the
    rendering of its factors; the test part is the fixed seeded one, and validation a twelfth
    of the rest, as for every source."""
    splits = {split: data.load("shapes", "shapes-4", split) for split in data.SPLITS}
    _, labels, factors = shapes.generate(shapes.grid_from_name("shapes-4"))
    key = lambda labels, factors: {(int(c), *np.nan_to_num(f, nan=-1.0)) for c, f in zip(labels, factors)}  # noqa: E731
    parts = [key(s.labels, s.factors) for s in splits.values()]
    assert sum(map(len, parts)) == len(labels) == len(set.union(*parts))
    assert set.union(*parts) == key(labels, factors)
    for split in splits.values():
        assert split.factor_names == shapes.FACTOR_NAMES and split.num_classes == 5
        np.testing.assert_array_equal(shapes.render(split.labels, split.factors), split.images)
    assert len(splits["test"].labels) == round(len(labels) / 6)
    train_and_validation = len(labels) - len(splits["test"].labels)
    assert len(splits["validation"].labels) == round(train_and_validation / 12)
    assert [s.name for s in splits.values()] == ["shapes-4/train", "shapes-4/validation", "shapes-4/test"]


def test_grid_names_and_bad_names():
    assert shapes.grid_from_name("shapes") == shapes.FULL_GRID
    assert shapes.grid_from_name("shapes-5") == shapes.Grid(5, 5, 5)
    for bad in ("shapes-1", "shapes-x", "shape", "shapes-"):
        with pytest.raises(data.DataError, match=f"unknown shapes grid '{bad}'"):
            data.load("shapes", bad, "train")
        with pytest.raises(ConfigError, match=f"config key data.name: unknown shapes grid '{bad}'"):
            validate(load_config("tiny", data__source="shapes", data__name=bad), 1)
    validate(load_config("tiny", data__source="shapes", data__name="shapes-3"), 1)


def test_dataset_factors_must_match_the_images():
    images, labels = np.zeros((3, 2, 2, 1), np.float32), np.zeros(3, np.int32)
    with pytest.raises(data.DataError, match=r"factors must be \[3, 2\]"):
        data.Dataset(images, labels, 1, "d", factors=np.zeros((2, 2)), factor_names=("a", "b"))
    with pytest.raises(data.DataError, match="factors and factor_names come together"):
        data.Dataset(images, labels, 1, "d", factors=np.zeros((3, 2)))
    assert data.load("digits", "digits", "validation").factors is None


@pytest.mark.parametrize("name", ["shapes_vae", "shapes_vsc", "shapes_class_prior",
                                  "shapes_align_centroid", "shapes_align_pairwise"])
def test_shapes_configs_validate_with_either_architecture(name):
    """Each shapes config passes validation as shipped and with the conv override it names."""
    for architecture in ("mlp", "conv"):
        config = load_config(name, model__architecture=architecture)
        validate(config, 8)
        assert (config.data.source, config.data.name) == ("shapes", "shapes")
    assert "--config.model.architecture=conv" in open(os.path.join(REPO_ROOT, "configs", f"{name}.py")).read()
