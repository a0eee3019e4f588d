"""The pure train step and the K-step call the training loop compiles.

``make_train_step`` builds ``(state, batch, key) -> (state, metrics)``: the loss and its
gradient, Adam's update under a finiteness check, the step counters. ``make_multi_step`` runs K
of them under ``lax.scan`` in one call, reading the batches either from its inputs (host
feeding) or from the training set resident on the devices (``vscjax.resident``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vscjax import objective, resident
from vscjax.state import TrainState

SKIPS = ("cond", "select")


def make_train_step(graphdef, tx, objective_config, num_classes: int, *,
                    class_major: bool = False, skip: str = "cond") -> Callable:
    """The pure train step ``(state, batch, key) -> (state, metrics)`` (not yet jitted).

    The step's noise is ``fold_in(key, state.step)``. A step whose loss or any gradient is
    not finite leaves parameters and optimizer state unchanged and counts itself in
    ``nonfinite_steps``; its metrics carry ``nonfinite = 1`` (read one step late by the loop).
    ``skip`` says how the update is withheld, with the same result either way: "cond" runs
    it under ``lax.cond`` (CPUs: a finite step pays nothing more), "select" keeps the old
    values with a select that XLA fuses into the update's own pass (TPUs, whose compiler
    copies every parameter and moment in and out of a conditional: :func:`skip_for`).
    """
    if skip not in SKIPS:
        raise ValueError(f"unknown update skip {skip!r}; expected one of {SKIPS}")

    def train_step(state: TrainState, batch: dict, key: jax.Array):
        step_key = jax.random.fold_in(key, state.step)

        def loss_fn(params):
            model = nnx.merge(graphdef, params)
            return objective.loss_and_metrics(model, batch, step_key, state.step,
                                              objective_config, num_classes, class_major=class_major)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        # One reduction decides (a non-finite gradient makes the norm non-finite); the update
        # runs under cond, so a finite step costs no extra select pass over the state.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def apply(operands):
            grads, opt_state, params = operands
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        def keep(operands):
            _, opt_state, params = operands
            return params, opt_state

        operands = (grads, state.opt_state, state.params)
        if skip == "cond":
            params, opt_state = jax.lax.cond(finite, apply, keep, operands)
        else:
            params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                             apply(operands), keep(operands))
        metrics["grad_norm"] = grad_norm
        metrics["nonfinite"] = (~finite).astype(jnp.int32)
        new_state = TrainState(
            params=params,
            opt_state=opt_state,
            step=state.step + 1,
            nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        )
        return new_state, metrics

    return train_step


def skip_for(platform: str) -> str:
    """How the train step withholds a non-finite update on devices of ``platform``."""
    return "select" if platform == "tpu" else "cond"


def make_multi_step(train_step: Callable, *, decode: str = "table") -> Callable:
    """K train steps in one call: ``(state, inputs, resident_set, key) -> (state, metrics)``.

    The steps run under ``lax.scan``; every metric comes back with a leading [K] axis.

    Args of the returned function:
      state: the train state (donate it).
      inputs: host feeding: a list of K batches ({"image": [B, H, W, C], "label": [B]});
        device feeding: [K, B] int32 indices into ``resident_set``.
      resident_set: the training set on the devices (``vscjax.resident.ResidentData``), or
        None for host feeding.
      key: the training key (each step folds in its own step number).
    """

    def multi_step(state: TrainState, inputs, resident_set, key: jax.Array):
        if resident_set is None:
            steps_inputs = jax.tree.map(lambda *arrays: jnp.stack(arrays), *inputs)  # [K, B, ...]
        else:
            steps_inputs = inputs  # [K, B]

        def one_step(state, step_input):
            batch = (step_input if resident_set is None
                     else resident.gather_batch(resident_set, step_input, decode=decode))
            return train_step(state, batch, key)

        return jax.lax.scan(one_step, state, steps_inputs)

    return multi_step
