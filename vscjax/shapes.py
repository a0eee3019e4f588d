"""Shapes: a synthetic image set whose generative factors are known, made in process.

Five classes of grey 32x32 shapes (32x32 is the smallest size the conv architecture takes).
Every image is one point of a full grid of factors:

- three **global** factors, which every class has: ``x`` and ``y``, the shape's centre in
  pixels from the image's left and top edges (pixel (i, j) covers [j, j + 1] x [i, i + 1]),
  and ``scale``, its half-size in pixels (the shape lies in the square centre +- scale);
- one **class-specific** factor per class, which only that class varies, as a fraction of the
  scale: ``square_rounding`` (the corner radius), ``ellipse_aspect`` (the vertical semi-axis
  over the horizontal one), ``triangle_apex`` (the apex's sideways shift), ``cross_arm_width``
  (an arm's half-width) and ``ring_hole`` (the inner radius over the outer one).

A factor that a class does not have is recorded as NaN, so factor k of image n is present
exactly where ``~isnan(factors[n, k])``: global factors in every image, a class's own factor
in its images alone. The ranges keep every shape in the image with a pixel to spare and keep
the classes apart (no rounding makes a square a disc, no aspect makes an ellipse a circle).

Each class's own factor takes 5 values over a wide range, so that one step of it changes many
pixels (a ring's hole grows by a pixel and more) and a code dimension can tell its values
apart; the 12 positions per axis give each class 3,600 images, so that the mutual information
of a class's factor, scored on that class's images alone, stands clear of the plug-in
estimator's floor (``vscjax.factor_metrics``).

Edges are anti-aliased from the signed distance d (in pixels, negative inside) at each
pixel's centre: the pixel's value is ``clip(1/2 - d, 0, 1)``, the exact covered fraction of a
pixel cut by an axis-aligned straight edge, and close to it for slanted and curved ones.

The grid is named by the config's ``data.name``: ``"shapes"`` is the full grid
(:data:`FULL_GRID`), ``"shapes-<n>"`` one with n values of every factor (the tests use small
ones). The split is fixed: a ``TEST_FRACTION`` of the grid, drawn with the constant
``TEST_SPLIT_SEED``, is the test set, and validation is held out of the rest as for every
source (``vscjax.data.load_shapes``). This module is NumPy alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np

IMAGE_SIZE = 32  # the smallest image the conv architecture takes (models.ConvEncoder)
CLASSES = ("square", "ellipse", "triangle", "cross", "ring")
GLOBAL_FACTORS = ("x", "y", "scale")
CLASS_FACTORS = ("square_rounding", "ellipse_aspect", "triangle_apex", "cross_arm_width",
                 "ring_hole")  # class c varies CLASS_FACTORS[c] alone
FACTOR_NAMES = GLOBAL_FACTORS + CLASS_FACTORS
POSITION_RANGE = (10.0, 22.0)  # pixels: centre +- the largest scale stays a pixel inside
SCALE_RANGE = (5.0, 9.0)  # half-size in pixels
CLASS_FACTOR_RANGES = {
    "square_rounding": (0.0, 0.8),  # corner radius / scale
    "ellipse_aspect": (0.3, 0.8),  # vertical / horizontal semi-axis
    "triangle_apex": (-1.0, 1.0),  # apex shift / scale (the base spans -scale..scale)
    "cross_arm_width": (0.2, 0.6),  # arm half-width / scale
    "ring_hole": (0.3, 0.8),  # inner / outer radius
}
TEST_FRACTION = 1 / 6  # of the grid
TEST_SPLIT_SEED = 20_250_520  # fixed, so the test images never depend on a run's seed
NAME = "shapes"
_CHUNK = 512  # images rendered at once (bounds the float64 temporaries to a few MiB each)


@dataclasses.dataclass(frozen=True)
class Grid:
    """How many values each factor takes: ``positions`` for x and y each, ``scales``, and
    ``class_values`` for every class's own factor (evenly spaced over their ranges)."""

    positions: int
    scales: int
    class_values: int

    @property
    def num_images(self) -> int:
        """Images in the grid: classes x positions^2 x scales x class values."""
        return len(CLASSES) * self.positions ** 2 * self.scales * self.class_values


FULL_GRID = Grid(positions=12, scales=5, class_values=5)  # 18,000 images, 70 MiB: seconds to make


def grid_from_name(name: str) -> Grid:
    """The grid a data set name asks for: "shapes" (:data:`FULL_GRID`) or "shapes-<n>" (n >= 2
    values of every factor).

    Raises:
      ValueError: any other name.
    """
    if name == NAME:
        return FULL_GRID
    match = re.fullmatch(rf"{NAME}-(\d+)", name)
    if not match or int(match.group(1)) < 2:
        raise ValueError(f"unknown shapes grid {name!r}; expected {NAME!r} (the full grid) or "
                         f"'{NAME}-<n>' with n >= 2 values of every factor")
    n = int(match.group(1))
    return Grid(positions=n, scales=n, class_values=n)


def factor_grid(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Every grid point, class by class, in a fixed order.

    Returns:
      (labels [N] int32, factors [N, K] float64 with K = len(FACTOR_NAMES), NaN where absent).
    """
    positions = np.linspace(*POSITION_RANGE, grid.positions)
    scales = np.linspace(*SCALE_RANGE, grid.scales)
    num_global = len(GLOBAL_FACTORS)
    labels, factors = [], []
    for c, own in enumerate(CLASS_FACTORS):
        values = np.linspace(*CLASS_FACTOR_RANGES[own], grid.class_values)
        points = np.array(list(itertools.product(positions, positions, scales, values)))  # [n, 4]
        rows = np.full((len(points), len(FACTOR_NAMES)), np.nan)  # [n, K]
        rows[:, :num_global] = points[:, :num_global]
        rows[:, num_global + c] = points[:, num_global]
        labels.append(np.full(len(points), c, np.int32))
        factors.append(rows)
    return np.concatenate(labels), np.concatenate(factors)


def render(labels: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Images of the shapes that (labels, factors) describe.

    Args:
      labels: [N] class indices into CLASSES.
      factors: [N, K] factor values as :func:`factor_grid` gives them.

    Returns:
      [N, 32, 32, 1] float32 images in [0, 1].
    """
    labels, factors = np.asarray(labels), np.asarray(factors, np.float64)
    images = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for c in range(len(CLASSES)):
        rows = np.flatnonzero(labels == c)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start:start + _CHUNK]
            distance = signed_distance(c, factors[chunk])  # [n, 32, 32]
            images[chunk] = np.clip(0.5 - distance, 0.0, 1.0)
    return images[..., None]


def signed_distance(class_index: int, factors: np.ndarray) -> np.ndarray:
    """Signed distance in pixels (negative inside) from each pixel centre to the shape's edge.

    Args:
      class_index: the class of every row.
      factors: [n, K] factor rows of that class.

    Returns:
      [n, 32, 32] float64.
    """
    centres = np.arange(IMAGE_SIZE) + 0.5
    px = centres[None, None, :] - factors[:, 0, None, None]  # [n, 1, 32]: right of the centre
    py = centres[None, :, None] - factors[:, 1, None, None]  # [n, 32, 1]: below the centre
    px, py = np.broadcast_arrays(px, py)  # [n, 32, 32] each
    s = factors[:, 2, None, None]  # [n, 1, 1]
    own = factors[:, len(GLOBAL_FACTORS) + class_index, None, None]  # [n, 1, 1]
    name = CLASSES[class_index]
    if name == "square":
        radius = own * s
        return _box(px, py, s - radius, s - radius) - radius
    if name == "ellipse":
        return _ellipse(px, py, s, own * s)
    if name == "triangle":
        return _convex_polygon(px, py, [(-s, s), (s, s), (own * s, -s)])
    if name == "cross":
        arm = own * s
        return np.minimum(_box(px, py, s, arm), _box(px, py, arm, s))
    inner = own * s  # ring: the annulus between radii inner and s
    return np.abs(np.hypot(px, py) - (s + inner) / 2) - (s - inner) / 2


def _box(px, py, half_width, half_height):
    """Exact signed distance to an axis-aligned rectangle centred at the origin."""
    qx, qy = np.abs(px) - half_width, np.abs(py) - half_height
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _ellipse(px, py, a, b):
    """Signed distance to the ellipse with semi-axes a (x) and b (y), to first order in the
    distance: k0 (k0 - 1) / k1 with k0 = |p / (a, b)|, k1 = |p / (a^2, b^2)|."""
    k0 = np.hypot(px / a, py / b)
    k1 = np.hypot(px / a**2, py / b**2)
    centre = k1 == 0.0  # the formula's 0 / 0; the centre lies min(a, b) inside
    return np.where(centre, -np.minimum(a, b), k0 * (k0 - 1.0) / np.where(centre, 1.0, k1))


def _convex_polygon(px, py, vertices):
    """Exact signed distance to a convex polygon whose vertices go anticlockwise on screen
    (y pointing down): the interior lies on the right of each edge in (x, y) coordinates."""
    distance = np.full(px.shape, np.inf)
    inside = np.ones(px.shape, bool)
    for (ax, ay), (bx, by) in zip(vertices, vertices[1:] + vertices[:1]):
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        distance = np.minimum(distance, np.hypot(wx - t * ex, wy - t * ey))
        inside &= ex * wy - ey * wx <= 0.0  # on the inner side of this edge
    return np.where(inside, -distance, distance)


def generate(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole grid: (images [N, 32, 32, 1] float32, labels [N] int32, factors [N, K] float64)."""
    labels, factors = factor_grid(grid)
    return render(labels, factors), labels, factors

