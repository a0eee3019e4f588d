"""What the pictures show: the dimensions traversed and the rows of samples from the prior."""

import jax
import numpy as np

from helpers import load_config
from vscjax import figures, metrics
from vscjax.codes import Codes
from vscjax.models import build_model
from vscjax.trained import TrainedModel


def test_factor_rows_traverse_global_dims_on_every_class_and_each_class_own_dim():
    freq = np.array([[0.9, 0.8, 0.0, 0.0],
                     [0.7, 0.9, 0.6, 0.0],
                     [0.8, 0.6, 0.0, 0.0]])  # dims 0, 1 global; dim 2 specific to class 1
    activation = dict(frequency=freq.tolist(), **metrics.shared_and_specific(freq))
    labels = np.array([2, 0, 1, 1, 0, 2])
    gamma = np.zeros((6, 4))
    gamma[3, 2] = 0.9  # the first class-1 image with dim 2 active is sample 3
    codes = Codes(mu=np.zeros((6, 4)), logvar=np.zeros((6, 4)), gamma=gamma, spikes=True)
    rows = figures.factor_rows(codes, labels, activation, max_global=1)
    # dim 0 (smallest class frequency 0.7) beats dim 1 (0.6); one image of each class.
    assert [(i, j) for i, j, _ in rows] == [(1, 0), (2, 0), (0, 0), (3, 2)]
    assert rows[-1][2] == "class 1 dim 2 (F 0.60)"


def test_each_factor_is_traversed_along_its_best_dim_on_an_image_that_has_it():
    """A global factor on the first image with its dimension active, whatever the class; a
    class's factor on the first image of its class with the dimension active, else the class's
    first image."""
    labels = np.array([0, 1, 1, 0, 1])
    gamma = np.zeros((5, 3))
    gamma[[3, 4], 0] = 0.9  # dim 0 first active in sample 3 (class 0)
    gamma[[0, 4], 1] = 0.9  # dim 1 active in class 1 only at sample 4
    codes = Codes(mu=np.zeros((5, 3)), logvar=np.zeros((5, 3)), gamma=gamma, spikes=True)
    factors = {"factors": [dict(name="x", **{"class": None}, best_dim=0, nmi=0.5),
                           dict(name="b", **{"class": 1}, best_dim=1, nmi=0.4),
                           dict(name="c", **{"class": 1}, best_dim=2, nmi=0.1)]}
    rows = figures.best_dim_rows(codes, labels, factors)
    assert [(i, j) for i, j, _ in rows] == [(3, 0), (4, 1), (1, 2)]
    assert rows[0][2] == "x: dim 0 (MI 0.50)"


def _model(prior, num_classes=3):
    config = load_config("tiny", model__prior=prior)
    model = build_model(config.model, (8, 8, 1), num_classes, alpha=config.objective.alpha,
                        key=jax.random.key(0))
    return model, config


def test_prior_sample_rows_give_a_row_per_class_where_there_are_classes():
    model, config = _model("class_mask")
    grid, names = figures.prior_sample_rows(TrainedModel(model, config, num_classes=3),
                                            jax.random.key(0), per_row=5)
    assert grid.shape == (3, 5, 8, 8, 1) and names == ["class 0", "class 1", "class 2"]
    model, config = _model("fixed")
    grid, names = figures.prior_sample_rows(TrainedModel(model, config, num_classes=3),
                                            jax.random.key(0), per_row=5, unlabelled_rows=2)
    assert grid.shape == (2, 5, 8, 8, 1) and names == ["fixed prior"] * 2
