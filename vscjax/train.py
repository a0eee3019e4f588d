"""Training: the train state, the jitted train and eval steps, and the training loop.

The train step is a pure function ``(state, batch, key) -> (state, metrics)``, the batch split
over the ``("data",)`` mesh and the state replicated. The loop calls it ``train.steps_per_call``
(K) steps at a time: one jitted call (state donated) runs K steps under ``lax.scan`` and
returns every step's metrics, so a call costs one dispatch, however small the step. The
batches come from the host or from the training set resident on the devices
(``vscjax.feeding``); both give bit-identical runs, and so does every K.

The loop reads each call's metrics one call late, so the host never waits on the device; it
checkpoints periodically and on SIGTERM/SIGINT, and resumes from the newest checkpoint in the
workdir, reaching bit-identical parameters to an uninterrupted run. A call is cut short (to
single steps) where a checkpoint, an evaluation or the last step falls inside it, so those
happen at their exact step; a SIGTERM is acted on when the running call ends, and the state
saved is that of the call's last step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from vscjax import data, feeding, objective, plots, resident, sharding
from vscjax.checkpoints import Checkpoints
from vscjax.config import ConfigError, validate
from vscjax.models import VSC
from vscjax.state import TrainState, abstract, initial_state



class NonFiniteLossError(RuntimeError):
    """Raised under ``train.nonfinite = "stop"`` when a step's loss or gradient is not finite."""


def make_train_step(graphdef, tx, objective_config, num_classes: int, *,
                    class_major: bool = False) -> Callable:
    """The pure train step ``(state, batch, key) -> (state, metrics)`` (not yet jitted).

    The step's noise is ``fold_in(key, state.step)``. A step whose loss or any gradient is
    not finite leaves parameters and optimizer state unchanged and counts itself in
    ``nonfinite_steps``; its metrics carry ``nonfinite = 1`` (read one step late by the loop).
    """

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

        def skip(operands):
            _, opt_state, params = operands
            return params, opt_state

        params, opt_state = jax.lax.cond(finite, apply, skip, (grads, state.opt_state, state.params))
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


def make_multi_step(train_step: Callable) -> Callable:
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
                     else resident.gather_batch(resident_set, step_input))
            return train_step(state, batch, key)

        return jax.lax.scan(one_step, state, steps_inputs)

    return multi_step


def make_eval_step(graphdef, objective_config) -> Callable:
    """``(params, images [B,H,W,C], labels [B], weights [B], key, step) -> sums`` of the eval
    terms.

    Sums are weighted by ``weights`` (0 for the padding of the last batch); the relaxed ELBO
    uses the training c at ``step``.
    """

    def eval_step(params, images, labels, weights, key, step):
        model = nnx.merge(graphdef, params)
        c = objective.schedule_value(objective_config.c, step)
        terms = objective.eval_terms(model, images, labels, key, c=c, alpha=objective_config.alpha)
        return {k: jnp.sum(jnp.where(weights > 0, weights * v, 0.0)) for k, v in terms.items()}

    return eval_step


class Trainer:
    """The model, data, mesh and compiled steps of one training configuration."""

    def __init__(self, config: ml_collections.ConfigDict, mesh=None):
        self.config = config
        self.mesh = mesh if mesh is not None else sharding.make_data_mesh()
        validate(config, self.mesh.devices.size)
        d = config.data
        self.train_data = data.load(d.source, d.name, "train", data_dir=d.dir)
        # In-training evaluation reads the validation split only; the test set is for reports.
        self.validation_data = data.load(d.source, d.name, "validation", data_dir=d.dir)
        if config.train.batch_size > len(self.train_data.labels):
            raise ConfigError(f"config key train.batch_size: {config.train.batch_size} is larger than "
                             f"the {len(self.train_data.labels)} training images of {d.name}")
        self.num_classes = self.train_data.num_classes
        self.image_shape = self.train_data.images.shape[1:]
        self.graphdef, state, self.tx = initial_state(config, self.image_shape, self.num_classes)
        self.replicated = sharding.replicated(self.mesh)
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.key = jax.random.key(config.seed)
        self.initial_state = jax.device_put(state, self.replicated)
        # K-step calls take their shardings from their arguments: the key goes where the state is.
        self.key = jax.device_put(self.key, self.replicated)
        train_step = make_train_step(self.graphdef, self.tx, config.objective, self.num_classes,
                                     class_major=config.data.balanced)
        self.train_step = jax.jit(
            train_step, in_shardings=(self.replicated, self.batch_sharding, self.replicated),
            out_shardings=self.replicated, donate_argnums=0)
        # The loop's K-step calls; the inputs arrive placed by their feed.
        self.train_steps = jax.jit(make_multi_step(train_step), out_shardings=self.replicated,
                                   donate_argnums=0)
        self.eval_step = jax.jit(
            make_eval_step(self.graphdef, config.objective),
            in_shardings=(self.replicated, self.batch_sharding, self.batch_sharding,
                          self.batch_sharding, self.replicated, self.replicated),
            out_shardings=self.replicated)

    def model(self, state: TrainState) -> VSC:
        """The NNX model holding ``state``'s parameters."""
        return nnx.merge(self.graphdef, state.params)

    def sampler(self) -> data.BatchSampler:
        """The training batch sampler (a pure function of the step)."""
        return data.BatchSampler(self.train_data.labels, self.config.train.batch_size,
                                 seed=self.config.seed, num_classes=self.num_classes,
                                 balanced=self.config.data.balanced)

    def feed(self, start_step: int) -> feeding.HostFeed | feeding.DeviceFeed:
        """The training batches from ``start_step`` on, as ``config.data.placement`` asks."""
        return feeding.make_feed(self.config.data, self.train_data, self.sampler(), self.mesh,
                                 start_step)

    def abstract_state(self):
        """Shapes, dtypes and shardings of the train state (the restore target)."""
        return abstract(self.initial_state, self.replicated)

    def evaluate(self, state: TrainState, dataset: data.Dataset | None = None) -> dict:
        """Exact (hard-spike) and relaxed negative ELBO, the leak and sparsity, as means over
        ``dataset`` (default: the validation split).

        Every evaluation uses the same noise, so two evaluations of one state agree exactly.
        """
        dataset = self.validation_data if dataset is None else dataset
        n, size = len(dataset.labels), self.config.train.eval_batch_size
        key = objective.eval_key(self.config.seed)
        totals = None
        for i, start in enumerate(range(0, n, size)):
            images = dataset.images[start:start + size]
            labels = dataset.labels[start:start + size]
            weights = np.ones(len(images), np.float32)
            pad = size - len(images)
            if pad:
                images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
                labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
                weights = np.concatenate([weights, np.zeros(pad, np.float32)])
            sums = self.eval_step(state.params, images, labels, weights, jax.random.fold_in(key, i),
                                  state.step)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        means = {k: float(v) / n for k, v in jax.device_get(totals).items()}
        return {"exact_neg_elbo": means.pop("exact"), "relaxed_neg_elbo": means.pop("relaxed"), **means}


# ----------------------------------------------------------------------------- logging


class MetricsLog:
    """Metrics to ``metrics.jsonl`` (one JSON object per line) and TensorBoard event files."""

    def __init__(self, workdir: str, resume_step: int = 0):
        """Open the log; records a resumed run will write again (step >= resume_step) are dropped."""
        from tensorboardX import SummaryWriter

        self.path = os.path.join(workdir, "metrics.jsonl")
        kept = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line cut by a kill
                        continue
                    if record["step"] < resume_step or (record["split"] == "validation" and record["step"] == resume_step):
                        kept.append(line if line.endswith("\n") else line + "\n")
        with open(self.path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(self.path + ".tmp", self.path)
        self.file = open(self.path, "a")
        self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, split: str, step: int, metrics: dict) -> None:
        record = {"split": split, "step": step, **{k: float(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for name, value in metrics.items():
            self.writer.add_scalar(f"{split}/{name}", float(value), step)

    def close(self) -> None:
        self.file.close()
        self.writer.close()


class _StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each call (then saves, exits)."""

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- the loop


def call_length(step: int, train_config: ml_collections.ConfigDict) -> int:
    """Steps of the loop's call that starts at ``step``.

    K (``steps_per_call``) when no checkpoint, evaluation or the last step falls inside the
    call; otherwise 1, so those land on their exact step and at most two call lengths (K and 1)
    are ever compiled. With K dividing ``checkpoint_every`` and ``eval_every`` every call
    before the last ones has K steps.

    Args:
      step: the call's first step.
      train_config: the ``config.train`` block.

    Returns:
      K or 1.
    """
    t = train_config
    stops = [t.num_steps, (step // t.checkpoint_every + 1) * t.checkpoint_every]
    if t.eval_every:
        stops.append((step // t.eval_every + 1) * t.eval_every)
    return t.steps_per_call if step + t.steps_per_call <= min(stops) else 1


def run(config: ml_collections.ConfigDict, workdir: str, *, mesh=None) -> dict:
    """Train (or resume) ``config`` in ``workdir``; returns the end-of-run summary.

    Writes ``config.json``, ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``,
    ``summary.json`` and ``plots/`` into the workdir.
    """
    from tqdm import tqdm

    trainer = Trainer(config, mesh)
    t = config.train
    checkpoints = Checkpoints(workdir, config)
    restored = checkpoints.restore_latest(trainer.abstract_state())
    state = trainer.initial_state if restored is None else restored
    start = int(jax.device_get(state.step))
    if restored is not None:
        logging.info("resuming from step %d in %s", start, workdir)
    log = MetricsLog(workdir, start)
    feed = trainer.feed(start)
    interactive = sys.stderr.isatty()  # a log file gets a line every 30 s, not every step
    progress = tqdm(total=t.num_steps, initial=start, unit="step", dynamic_ncols=True,
                    mininterval=0.1 if interactive else 30.0, disable=start >= t.num_steps)
    pending = None  # (first step, metrics [K] on device) of the previous call: read one call late
    tick, tick_step = time.perf_counter(), start

    def report(first, metrics):
        """Called one call late: the device has the next call queued while we read this one."""
        nonlocal tick, tick_step
        end = first + len(metrics["loss"])  # one past the call's last step
        if t.nonfinite == "stop":
            bad = np.flatnonzero(jax.device_get(metrics["nonfinite"]))
            if bad.size:
                raise NonFiniteLossError(
                    f"step {first + bad[0]}: non-finite loss or gradient (update skipped); the "
                    f"last good checkpoint is step {checkpoints.latest_step()} in {workdir}")
        logged = [s for s in range(first, end) if s % t.log_every == 0 or s == t.num_steps - 1]
        if logged:
            host = jax.device_get(metrics)  # [K] each
            now = time.perf_counter()
            rate = (end - tick_step) * t.batch_size / max(now - tick, 1e-9)
            tick, tick_step = now, end
            for s in logged:
                log.write("train", s, {**{k: v[s - first] for k, v in host.items()},
                                       "samples_per_second": rate})
            progress.set_postfix(loss=f"{host['loss'][logged[-1] - first]:.2f}",
                                 samples_s=f"{rate:,.0f}")

    try:
        with _StopSignal() as stop, contextlib.closing(feed):
            step = start
            while step < t.num_steps:
                k = call_length(step, t)
                state, metrics = trainer.train_steps(state, feed.inputs(step, k), feed.resident,
                                                     trainer.key)
                if pending is not None:
                    report(*pending)
                pending = (step, metrics)
                progress.update(k)
                step += k
                if step % t.checkpoint_every == 0:
                    checkpoints.save(state)
                if t.eval_every and step % t.eval_every == 0 and step < t.num_steps:
                    log.write("validation", step, trainer.evaluate(state))
                if stop.received:
                    report(*pending)  # the call's log records: a resumed run starts after them
                    checkpoints.save(state, force=True)
                    checkpoints.wait()
                    logging.warning("%s received: saved step %d in %s; rerun to resume",
                                    stop.received, step, workdir)
                    return {"interrupted_at_step": step}
            if pending is not None:
                report(*pending)
        checkpoints.save(state, force=True)
        summary = {"step": int(jax.device_get(state.step)),
                   "nonfinite_steps": int(jax.device_get(state.nonfinite_steps)),
                   "num_devices": int(trainer.mesh.devices.size),
                   "split": "validation",
                   **trainer.evaluate(state)}
        log.write("validation", summary["step"],
                  {k: v for k, v in summary.items() if k not in ("step", "split")})
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        if t.plots:
            _end_of_run_plots(trainer, state, workdir, log.path)
        return summary
    finally:
        progress.close()
        log.close()
        checkpoints.close()


def _end_of_run_plots(trainer: Trainer, state: TrainState, workdir: str, metrics_path: str) -> None:
    """The cheap pictures: validation reconstructions (posterior mean code) and training curves."""
    images = trainer.validation_data.images[:10]
    model = trainer.model(state)
    mu, logvar, spike_logit = model.encode(jnp.asarray(images))
    # The posterior mean code: gamma > 0.5 decides the spike, the slab contributes its mean.
    code = mu if spike_logit is None else mu * (spike_logit > 0)
    recon = np.asarray(model.mean_image(code))
    plot_dir = os.path.join(workdir, "plots")
    plots.reconstruction_grid(images, recon, os.path.join(plot_dir, "reconstructions.png"),
                              title="validation inputs and reconstructions (spikes: gamma > 0.5)")
    plots.training_curves(metrics_path, os.path.join(plot_dir, "training_curves.png"))


def summarise(summary: dict) -> str:
    """A short human-readable end-of-run summary."""
    if "interrupted_at_step" in summary:
        return f"interrupted at step {summary['interrupted_at_step']}; rerun the same command to resume"
    lines = [f"step {summary['step']} on {summary['num_devices']} device(s)",
             f"validation exact -ELBO   {summary['exact_neg_elbo']:9.2f} nats "
             f"(recon {summary['recon']:.2f}, slab KL {summary['slab_kl']:.2f}, "
             f"spike KL {summary['spike_kl']:.2f})",
             f"validation relaxed -ELBO {summary['relaxed_neg_elbo']:9.2f} nats (leak {summary['leak']:.2f})",
             f"active dims: expected {summary['expected_active']:.2f}, "
             f"gamma > 0.5 {summary['active_count']:.2f}"]
    if summary["nonfinite_steps"]:
        lines.append(f"non-finite steps skipped: {summary['nonfinite_steps']}")
    return "\n".join(lines)
