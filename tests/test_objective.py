"""The training objective: schedules, the class-mask prior's offsets and regularisers, and the
class-mask prior's training KL (the bounds are tests/test_bounds.py's)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from helpers import REPO_ROOT, load_config
from vscjax import objective
from vscjax.config import base_config, schedule
from vscjax.models import VSC


@pytest.mark.parametrize("step", [0, 50, 100, 175, 300, 1000])
def test_schedules_match_closed_forms(step):
    t = min(max((step - 100) / 200, 0.0), 1.0)
    linear = schedule("linear", 400.0, start=50.0, begin_step=100, end_step=300)
    expo = schedule("exponential", 1000.0, start=10.0, begin_step=100, end_step=300)
    np.testing.assert_allclose(objective.schedule_value(linear, step), 50 + t * 350, rtol=1e-6)
    np.testing.assert_allclose(objective.schedule_value(expo, step), 10 * 100**t, rtol=1e-5)
    assert objective.schedule_value(schedule("constant", 7.0), step) == 7.0
    traced = jax.jit(lambda s: objective.schedule_value(linear, s))(jnp.int32(step))
    np.testing.assert_allclose(traced, 50 + t * 350, rtol=1e-6)


@pytest.mark.parametrize("name", ["mnist_vsc", "mnist", "mnist_class_prior", "fashion_mnist_vsc"])
def test_a_ramp_over_the_run_follows_train_num_steps(name):
    """The shipped c ramp ends at the run's last step: 10,000 as shipped, and wherever an
    override of train.num_steps puts it, from a config file or from train.py's flags; setting
    its end_step moves it alone."""
    assert load_config(name).objective.c.end_step == 10_000
    assert load_config(name, train__num_steps=300).objective.c.end_step == 300
    fixed = load_config(name, train__num_steps=300, objective__c__end_step=10_000)
    assert (fixed.objective.c.end_step, fixed.train.num_steps) == (10_000, 300)
    argv = ["train.py", f"--config={os.path.join(REPO_ROOT, 'configs', name + '.py')}",
            "--config.train.num_steps=2000"]
    flag_values = flags.FlagValues()  # as train.py defines and parses its flags
    config_flags.DEFINE_config_file("config", os.path.join(REPO_ROOT, "configs", "default.py"),
                                    flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    assert flag_values.config.objective.c.end_step == 2000
    assert json.loads(flag_values.config.to_json())["objective"]["c"]["end_step"] == 2000


def test_schedules_a_run_stops_before_their_end_are_named():
    config = load_config("large_latent")  # the KL's weight rises from 0 to 1 over 1,000 steps
    assert objective.unfinished_schedules(config.objective, config.train.num_steps) == []
    assert objective.unfinished_schedules(config.objective, 300) == [
        "objective.beta ends at step 1000, after train.num_steps=300: it stops at 0.3 instead of 1 "
        "(--config.objective.beta.end_step=300 ends it with this run)"]
    assert objective.unfinished_schedules(load_config("mnist_vsc", train__num_steps=300).objective,
                                          300) == []


def test_nonnegative_class_offsets_only_raise_the_shared_logits():
    model = VSC((8, 8, 1), 5, hidden=(8,), prior="class_mask", num_classes=3, alpha=0.05,
                class_offsets="nonnegative", rngs=nnx.Rngs(params=0))
    prior = model.prior
    # Starts at (about) the fixed prior.
    np.testing.assert_allclose(prior.masks(), 0.05, atol=2e-4)
    prior.offset[...] = jnp.asarray(np.random.default_rng(0).normal(0, 5, (3, 5)), jnp.float32)
    h = np.asarray(prior.offsets())
    np.testing.assert_allclose(h, np.logaddexp(0, np.asarray(prior.offset[...], np.float64)), rtol=1e-5)
    assert np.all(np.asarray(prior.logits()) >= np.asarray(prior.shared[...])[None] - 1e-6)
    with pytest.raises(ValueError, match="unknown class offsets 'x'"):
        VSC((8, 8, 1), 5, hidden=(8,), prior="class_mask", num_classes=3, class_offsets="x",
            rngs=nnx.Rngs(params=0))


def test_partial_sharing_spares_class_specific_and_global_dimensions():
    big = 30.0  # logits of probability ~1 and ~0
    specific = np.full((4, 3), -big)
    specific[[0, 1, 3], [0, 1, 2]] = big  # each dimension used by one class
    assert float(objective.partial_sharing(jnp.asarray(specific, jnp.float32))) < 1e-6
    assert float(objective.partial_sharing(jnp.full((4, 3), big, jnp.float32))) < 1e-6  # global
    partial = np.full((4, 1), -big)
    partial[:2] = big  # two of four classes share the dimension
    assert float(objective.partial_sharing(jnp.asarray(partial, jnp.float32))) == pytest.approx(1.0, abs=1e-5)


def test_sparsity_is_latent_dim_times_a_bernoulli_kl():
    rho, alpha = np.array([0.01, 0.2, 0.5, 0.93]), 0.05
    expected = 7 * (rho * np.log(rho / alpha) + (1 - rho) * np.log((1 - rho) / (1 - alpha)))
    got = objective.sparsity(jnp.asarray(rho, jnp.float32), 7, alpha)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert float(objective.sparsity(jnp.float32(alpha), 7, alpha)) == pytest.approx(0.0, abs=1e-5)


def test_class_mask_training_kl_reads_only_the_samples_own_class_row():
    """Training takes each sample's spike KL to its own class's row: with only class 0 in the
    batch (and no regulariser) no other row gets a gradient; the regularisers reach the rows of
    the classes present."""
    config = base_config()
    model = VSC((8, 8, 1), 6, hidden=(16,), prior="class_mask", num_classes=3, alpha=0.1,
                rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(model)
    x = jnp.asarray(np.random.default_rng(0).random((8, 8, 8, 1)), jnp.float32)

    def offset_grad(labels, sparsity_weight, penalty):
        objective_config = config.objective.copy_and_resolve_references()
        objective_config.sparsity_weight, objective_config.class_prior_penalty = sparsity_weight, penalty

        def loss(params):
            batch = {"image": x, "label": jnp.asarray(labels, jnp.int32)}
            return objective.loss_and_metrics(nnx.merge(graphdef, params), batch, jax.random.key(0), 0,
                                              objective_config, 3)[0]

        grads = jax.grad(loss)(params)
        return np.asarray(grads["prior"]["offset"][...])  # [C, L]

    g = offset_grad([0] * 8, 0.0, 0.0)
    assert np.all(np.abs(g[0]) > 0) and np.all(g[1:] == 0)
    g = offset_grad([0] * 4 + [2] * 4, 1.0, 0.0)  # sparsity term: rows 0 and 2 only
    assert np.any(g[0] != 0) and np.all(g[1] == 0) and np.any(g[2] != 0)
    model.prior.offset[...] = jnp.ones((3, 6))  # the penalty's gradient is 2 offset / B per sample
    graphdef, params = nnx.split(model)
    with_penalty, without = offset_grad([1] * 8, 0.0, 0.5), offset_grad([1] * 8, 0.0, 0.0)
    np.testing.assert_allclose(with_penalty[1] - without[1], 0.5 * 2 * 1.0, rtol=1e-5)
