"""The train state and the optimizer: what a checkpoint holds and how it is created.

Shared by the training loop and the checkpoints (``abstract``: the shapes a restore asks for).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from vscjax import rng
from vscjax.models import build_model


class TrainState(struct.PyTreeNode):
    """Everything a resumed run needs; data position and keys follow from ``step``."""

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: number of updates attempted so far
    nonfinite_steps: jax.Array  # int32 scalar: steps whose update was skipped


def make_optimizer(opt: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """Adam (constant or cosine-decayed learning rate), clipped first if ``grad_clip_norm > 0``."""
    lr = (optax.cosine_decay_schedule(opt.learning_rate, num_steps)
          if opt.lr_schedule == "cosine" else opt.learning_rate)
    adam = optax.adam(lr, b1=opt.b1, b2=opt.b2)
    if opt.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), adam)
    return adam


def initial_state(config: ml_collections.ConfigDict, image_shape: Sequence[int], num_classes: int):
    """(graphdef, TrainState at step 0, optimizer) of ``config`` for images of ``image_shape``
    in ``num_classes`` classes."""
    model = build_model(config.model, image_shape, num_classes, alpha=config.objective.alpha,
                        key=rng.key(config.seed, "init"))
    graphdef, params = nnx.split(model)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    state = TrainState(params=params, opt_state=tx.init(params), step=jnp.int32(0),
                       nonfinite_steps=jnp.int32(0))
    return graphdef, state, tx


def abstract(state: TrainState, sharding) -> TrainState:
    """Shapes and dtypes of ``state`` placed with ``sharding``: a restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
