"""The latent dimension split over devices (mesh ("data", "latent"), ``mesh.latent = M``): the
same loss, metrics and gradients as one device on every mesh shape, no L-sized array gathered
whole, M = 1 exactly today's data-parallel program, and checkpoints that move between meshes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import assert_trees_equal, load_config
from vscjax import hlo_costs, sharding, train, train_step
from vscjax.checkpoints import Checkpoints
from vscjax.state import TrainState

MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]  # (data, latent)
LATENT = 56  # a latent size no other axis of the tiny model has: 56 / 8 = 7 per device
# Every prior with every alignment; CI runs two that between them cover both priors and both
# kinds of batch statistic (the rest: python -m pytest -m grid).
IN_CI = {("class_mask", "centroid"), ("fixed", "pairwise")}
PRIORS_AND_ALIGNMENTS = [
    (prior, align) if (prior, align) in IN_CI else pytest.param(prior, align, marks=pytest.mark.grid)
    for prior in ("fixed", "class_mask") for align in ("off", "centroid", "pairwise")]


def _config(prior, align, **overrides):
    """The tiny config with class-balanced batches of 40 (4 per class, class-major order)."""
    return load_config("tiny", model__prior=prior, objective__align_mode=align, data__balanced=True,
                       train__batch_size=40, train__eval_batch_size=40, **overrides)


def _sgd_step(config, mesh):
    """(gradient, metrics) of one update of batch 0 on ``mesh``: SGD with learning rate 1, so
    parameters before minus after is the gradient."""
    trainer = train.Trainer(config, mesh)
    tx = optax.sgd(1.0)
    params = trainer.initial_state.params
    state = TrainState(params=params, opt_state=tx.init(params), step=jnp.int32(0),
                       nonfinite_steps=jnp.int32(0))
    idx = trainer.sampler().indices(0)
    batch = sharding.shard_batch({"image": trainer.train_data.images[idx],
                                  "label": trainer.train_data.labels[idx]}, mesh)
    step = jax.jit(train_step.make_train_step(trainer.graphdef, tx, config.objective,
                                              trainer.num_classes, class_major=True))
    new_state, metrics = step(state, batch, trainer.key)
    return jax.device_get(jax.tree.map(jnp.subtract, params, new_state.params)), jax.device_get(metrics)


@pytest.mark.parametrize("prior, align", PRIORS_AND_ALIGNMENTS)
def test_every_mesh_shape_gives_the_one_device_step(prior, align):
    grads1, metrics1 = _sgd_step(_config(prior, align), sharding.make_mesh(1, jax.devices()[:1]))
    for data, latent in MESHES:
        grads, metrics = _sgd_step(_config(prior, align, mesh__latent=latent), sharding.make_mesh(latent))
        assert dict(sharding.make_mesh(latent).shape) == {"data": data, "latent": latent}
        for name in metrics1:
            np.testing.assert_allclose(metrics[name], metrics1[name], rtol=1e-5, atol=1e-7,
                                       err_msg=f"{name} on mesh {data}x{latent}")
        for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.max(np.abs(a)),
                                       err_msg=f"gradient on mesh {data}x{latent}")


def _gathers(text):
    """(opcode, result dims) of every instruction that gathers or exchanges data across devices."""
    _, computations = hlo_costs.parse_module(text)
    moved = ("all-gather", "all-to-all", "collective-permute")
    return [(i.opcode, hlo_costs._dims(i.shape)) for instructions in computations.values()
            for i in instructions if i.opcode.startswith(moved)]


@pytest.mark.parametrize("prior, align", PRIORS_AND_ALIGNMENTS)
def test_no_latent_sized_array_is_gathered_whole(prior, align):
    """The compiled K-step call on a 4 x 2 mesh: every all-gather, all-to-all and permute carries
    at most L / 2 of the latent axis (the pairwise alignment gathers the batch of its own slice)."""
    config = _config(prior, align, mesh__latent=2, model__latent_dim=LATENT)
    trainer = train.Trainer(config)
    feed = trainer.feed(0)
    text = trainer.train_steps.lower(trainer.initial_state, feed.inputs(0, 1), feed.resident,
                                     trainer.key).compile().as_text()
    for opcode, dims in _gathers(text):
        assert LATENT not in dims and 3 * LATENT not in dims, (opcode, dims)
    heads = trainer.initial_state.params["encoder"]["heads"]["kernel"][...]
    assert heads.sharding.shard_shape(heads.shape)[-1] == LATENT // 2


def test_one_device_along_latent_is_the_data_parallel_program_bit_for_bit():
    config = load_config("tiny", train__num_steps=3)
    states = []
    for mesh in (sharding.make_data_mesh(), sharding.make_mesh(1)):
        trainer = train.Trainer(config, mesh)
        state = trainer.initial_state
        feed = trainer.feed(0)
        for step in range(3):
            state, _ = trainer.train_steps(state, feed.inputs(step, 1), feed.resident, trainer.key)
        states.append(jax.device_get(state))
    assert_trees_equal(*states)


def test_training_with_the_latent_split_ends_on_the_same_loss(tmp_path):
    summaries = [train.run(load_config("tiny", mesh__latent=latent, train__num_steps=20,
                                       objective__mask="relaxed"),  # relaxed: its ELBO is recorded
                           str(tmp_path / f"latent{latent}")) for latent in (1, 2)]
    for key in ("exact_neg_elbo", "relaxed_neg_elbo", "expected_active"):
        np.testing.assert_allclose(summaries[1][key], summaries[0][key], rtol=1e-5)


def test_a_checkpoint_restores_under_another_mesh(tmp_path):
    """Saved with the latent axis over 4 devices, restored with it whole (and back): the same
    values, now laid out as the new mesh asks; the run resumes from it."""
    config = load_config("tiny", mesh__latent=4, train__num_steps=10)
    train.run(config, str(tmp_path))
    saved = Checkpoints.reader(str(tmp_path))
    for latent in (1, 8):
        trainer = train.Trainer(load_config("tiny", mesh__latent=latent, train__num_steps=10))
        restored = saved.restore_latest(trainer.abstract_state())
        kernel = restored.params["encoder"]["heads"]["kernel"][...]
        assert kernel.sharding.shard_shape(kernel.shape)[-1] == 16 // latent
        assert_trees_equal(jax.device_get(restored),
                           jax.device_get(Checkpoints.reader(str(tmp_path)).restore_latest(
                               train.Trainer(config).abstract_state())))
    summary = train.run(load_config("tiny", mesh__latent=2, train__num_steps=20), str(tmp_path))
    assert summary["resumed_from"] == 10 and summary["step"] == 20


def test_a_checkpoint_from_before_the_heads_had_a_latent_axis_is_read(tmp_path):
    """Checkpoints written when the heads' kernel was [in, 3L] and their bias [3L] (one flat
    Linear): read in that layout and reshaped, values in the same order, Adam moments too."""
    config = load_config("tiny", mesh__latent=2, train__num_steps=10)
    trainer = train.Trainer(config)
    state = jax.device_get(trainer.initial_state)
    flat = {"kernel": lambda x: x.reshape(x.shape[0], -1), "bias": lambda x: x.reshape(-1)}

    def older(path, leaf):
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        if "heads" in names:
            return flat[names[names.index("heads") + 1]](leaf)
        return leaf

    writer = Checkpoints(str(tmp_path), config)
    writer.save(jax.tree_util.tree_map_with_path(older, state), force=True)
    writer.close()  # waits for the write
    restored = Checkpoints.reader(str(tmp_path)).restore_latest(trainer.abstract_state())
    assert_trees_equal(jax.device_get(restored), state)
    kernel = restored.params["encoder"]["heads"]["kernel"][...]
    assert kernel.sharding.shard_shape(kernel.shape) == (32, 3, 8)


def test_a_latent_sharded_workdir_evaluates_and_loads(tmp_path):
    """Trained with the latent axis over 2 devices (end-of-run pictures drawn): the evaluation,
    on a mesh split the same way, gives the trainer's validation numbers, and vscjax.load (the
    parameters whole on one device) encodes the images as the evaluation did."""
    from vscjax import data, evaluate, trained

    config = load_config("tiny", mesh__latent=2, train__num_steps=20, train__plots=True,
                         model__prior="class_mask")
    summary = train.run(config, str(tmp_path))
    assert (tmp_path / "plots" / "prior_samples.png").exists()
    results = evaluate.evaluate_workdir(str(tmp_path), split="validation", probe_train=200,
                                        make_plots=True, save_split_codes=True)
    np.testing.assert_allclose(results["elbo"]["exact_neg_elbo"], summary["exact_neg_elbo"], rtol=1e-5)
    saved = np.load(results["codes"])
    images = data.load(config.data.source, config.data.name, "validation").images
    codes = trained.load(str(tmp_path)).encode(images)
    np.testing.assert_allclose(codes.mu, saved["mu"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(codes.gamma, saved["gamma"], rtol=1e-5, atol=1e-6)
