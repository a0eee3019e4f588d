"""Training: the jitted train step, the training loop, and its evaluation and logging.

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
happen at their exact step; a stop signal is acted on when the running call ends, and the
state saved is that of the call's last step. Evaluation runs through
``vscjax.evaluation_loop``, the loop ``vscjax.evaluate`` uses too; the workdir's files and their
names are ``vscjax.workdir``'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from vscjax import (
    cpu_random,
    data,
    evaluation_loop,
    faults,
    feeding,
    host_memory,
    memory,
    multihost,
    objective,
    profiling,
    provenance,
    resident,
    rng,
    sharding,
    trained,
)
from vscjax.atomic import write_text_atomic
from vscjax.checkpoints import Checkpoints
from vscjax.config import ConfigError, check_resume_compatible, validate
from vscjax.figures import draw_training_figures
from vscjax.lock import workdir_lock
from vscjax.models import VSC
from vscjax.program import DataSpec, TrainProgram
from vscjax.state import TrainState
from vscjax.workdir import (
    metrics_path,
    plots_dir,
    profile_dir,
    read_metrics,
    saved_config,
    tensorboard_dir,
    write_config,
    write_dataset_info,
    write_summary,
)

MAX_SKIPPED_IN_A_ROW = 100  # under nonfinite = "skip", this many in a row stop the run


class NonFiniteLossError(RuntimeError):
    """Raised when a step's loss or gradient is not finite under ``train.nonfinite = "stop"``,
    or when ``MAX_SKIPPED_IN_A_ROW`` steps in a row are under ``"skip"`` (the parameters then
    give no finite step at all: skipping would go on for ever)."""


class Trainer:
    """The model, data, mesh and compiled steps of one training configuration."""

    def __init__(self, config: ml_collections.ConfigDict, mesh=None):
        self.config = config
        validate(config, len(jax.devices()) if mesh is None else mesh.devices.size)
        self.mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh.latent)
        if self.mesh.devices.flat[0].platform == "cpu":  # same bits, less memory traffic
            host_memory.reuse_large_allocations()
            cpu_random.unroll_threefry()
        if dict(self.mesh.shape).get(sharding.LATENT_AXIS, 1) != config.mesh.latent:
            raise ValueError(f"the mesh {dict(self.mesh.shape)} does not have the config's "
                             f"mesh.latent={config.mesh.latent} devices along the latent axis")
        d = config.data
        self.train_data = data.load(d.source, d.name, "train", data_dir=d.dir, mirror=d.mirror)
        # In-training evaluation reads the validation split only; the test set is for reports.
        self.validation_data = data.load(d.source, d.name, "validation", data_dir=d.dir,
                                         mirror=d.mirror)
        if config.train.batch_size > len(self.train_data.labels):
            raise ConfigError(f"config key train.batch_size: {config.train.batch_size} is larger than "
                             f"the {len(self.train_data.labels)} training images of {d.name}")
        self.num_classes = self.train_data.num_classes
        self.image_shape = self.train_data.images.shape[1:]
        self.sampler()  # batches these labels cannot give (balanced ones) refused before any work
        self._encoded = resident.encode_pixels(self.train_data.images)  # (codes, levels)
        try:
            self.program = TrainProgram(config, DataSpec.of(self.train_data, self._encoded[1]),
                                        self.mesh)
        except ValueError as err:  # the model cannot take this data, e.g. conv on 8x8 images
            raise ConfigError(f"config key model.architecture: {err} ({d.name})") from None
        self._check_fits()
        self.graphdef, self.tx = self.program.graphdef, self.program.tx
        self.replicated = self.program.replicated
        self.batch_sharding = self.program.batch_sharding
        self.initial_state = self.program.initial_state()
        self.key = self.program.key()
        self.train_step = self.program.train_step
        self.train_steps = self.program.train_steps  # the loop's K-step calls

    def _check_fits(self) -> None:
        """Refuse, before anything is allocated, a config whose state and batches alone need
        more memory than a device has (``program.bytes_per_device``)."""
        parts = self.program.bytes_per_device()
        device = self.mesh.devices.flat[0]
        capacity = memory.device_bytes(device)
        if sum(parts.values()) <= capacity:
            return
        largest = max(parts, key=parts.get)
        key = {"state": "model.latent_dim", "training set": "data.device_budget_mib",
               "training batches": "train.batch_size", "evaluation batch": "train.eval_batch_size"}[largest]
        listed = ", ".join(f"{name} {memory.gib(size)}" for name, size in parts.items())
        raise ConfigError(
            f"config key {key}: a run needs at least {memory.gib(sum(parts.values()))} per device "
            f"({listed}), more than the {memory.gib(capacity)} a {device.platform} device has; "
            "make model.latent_dim, model.hidden or the batch sizes smaller, or split the latent "
            "dimension over more devices (mesh.latent)")

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
                                 start_step, encoded=self._encoded)

    def abstract_state(self):
        """Shapes, dtypes and shardings of the train state (the restore target)."""
        return self.program.abstract_state()

    def evaluate(self, state: TrainState, dataset: data.Dataset | None = None) -> dict:
        """Exact (hard-spike) negative ELBO, the relaxed one and the leak (relaxed training only:
        ``objective.leak_applies``), and sparsity, as means over ``dataset`` (default: the
        validation split).

        Every evaluation uses the same noise, so two evaluations of one state agree exactly;
        each process feeds only its own rows (``vscjax.evaluation_loop``).
        """
        dataset = self.validation_data if dataset is None else dataset
        terms = evaluation_loop.elbo_terms(self.graphdef, state.params, self.config, dataset.images,
                                           dataset.labels, step=int(jax.device_get(state.step)),
                                           mesh=self.mesh)
        means = {k: v for k, v in evaluation_loop.mean_terms(terms).items()
                 if not np.isnan(v)}  # terms that do not apply to this prior are NaN
        if not objective.leak_applies(self.config.objective):  # the relaxed sample was never trained
            means.pop("leak", None)
            means.pop("relaxed_neg_elbo", None)
        return means


# ----------------------------------------------------------------------------- logging


class MetricsLog:
    """Metrics to ``metrics.jsonl`` (one JSON object per line) and TensorBoard event files.

    A record ``{"split": "train" | "validation", "step": k, ...}`` describes step k, the state
    after k updates: a train record holds the metrics of update k itself (its loss is that of
    the parameters before it), a validation record the evaluation of the state after it.
    ``{"event": "start", "step": k, "resumed_from": k or null}`` marks where a run started.
    """

    def __init__(self, workdir: str, resume_step: int = 0):
        """Open the log, keeping the records of steps <= ``resume_step`` (a resumed run writes
        the later ones again) and dropping a line cut by a kill."""
        from tensorboardX import SummaryWriter

        self.path = metrics_path(workdir)
        kept = ([r for r in read_metrics(workdir) if r["step"] <= resume_step]
                if os.path.exists(self.path) else [])
        self._logged = {(r.get("split"), r["step"]) for r in kept}
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.writer = SummaryWriter(tensorboard_dir(workdir))

    def has(self, split: str, step: int) -> bool:
        """Whether the log holds a record of ``split`` at ``step``."""
        return (split, step) in self._logged

    def start(self, step: int, resumed_from: int | None) -> None:
        """Record that a run starts at ``step``, restored from that step's checkpoint or not."""
        self._append({"event": "start", "step": step, "resumed_from": resumed_from})

    def write(self, split: str, step: int, metrics: dict) -> None:
        """Append the record of ``split`` at ``step`` (and its TensorBoard scalars)."""
        record = {"split": split, "step": step, **{k: float(v) for k, v in metrics.items()}}
        self._append(record)
        self._logged.add((split, step))
        for name, value in metrics.items():
            self.writer.add_scalar(f"{split}/{name}", float(value), step)

    def _append(self, record: dict) -> None:
        """Append one line, whole: a write that fails half-way (a full disk) is cut back off,
        so the file keeps whole lines and the error goes up."""
        line = (json.dumps(record) + "\n").encode()
        if faults.armed("metrics_append", record["step"]):  # a kill that cuts this very line
            os.write(self._fd, line[:len(line) // 2])
            faults.point("metrics_append", record["step"])
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            rest = memoryview(line)
            while rest:
                rest = rest[os.write(self._fd, rest):]
        except OSError as err:
            os.ftruncate(self._fd, end)
            raise OSError(err.errno, err.strerror, self.path) from err

    def close(self) -> None:
        os.close(self._fd)
        try:
            self.writer.close()
        except OSError as err:  # TensorBoard's own error names no file
            raise OSError(err.errno, err.strerror, self.writer.logdir) from err


class _Interrupted(Exception):
    """A stop signal arrived while :meth:`_StopSignal.interrupting` was active."""


class _Unlogged:
    """The metrics log of a process that is not the writer: it records nothing."""

    path = None

    def start(self, step: int, resumed_from) -> None:
        pass

    def has(self, split: str, step: int) -> bool:
        return False

    def write(self, split: str, step: int, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


class _StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks before each call (then saves, exits);
    inside :meth:`interrupting` the signal interrupts the work at once."""

    def __init__(self):
        self.received = None
        self.previous = {}
        self._interrupt = False

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        if self._interrupt:
            raise _Interrupted(self.received)

    @contextlib.contextmanager
    def interrupting(self):
        """Within: a stop signal (or one already received) raises :class:`_Interrupted`."""
        if self.received:
            raise _Interrupted(self.received)
        self._interrupt = True
        try:
            yield
        finally:
            self._interrupt = False

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- the loop


def _closing_after(close):
    """An ``ExitStack`` exit callback that calls ``close``; a failure of ``close`` is raised
    only when the block itself succeeded, so that it never hides the error that came first
    (a full disk fails the save, then the close of every writer on that disk)."""

    def exit_callback(exc_type, exc, tb) -> bool:
        try:
            close()
        except Exception:
            if exc_type is None:
                raise
        return False

    return exit_callback


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

    Writes ``config.json``, ``dataset.json`` (image shape and classes, for ``vscjax.load``),
    ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``, ``summary.json``, ``plots/`` and,
    with ``train.profile_steps > 0``, ``profile/`` into the workdir. The summary's
    ``resumed_from`` is the step whose checkpoint the run started from (None: a fresh start).
    With several processes every process calls it; process 0 alone writes files other than
    checkpoints, and a stop signal to any process stops all of them after the same step.

    SIGTERM or SIGINT, from start-up on, stops the run before its next update with the state
    saved; during the final evaluation it stops the evaluation (the final state is saved and
    sealed before it starts). Either way the run returns ``{"interrupted_at_step": k,
    "resumed_from": ...}``, and rerunning resumes from step k.
    """
    from tqdm import tqdm

    with _StopSignal() as stop, contextlib.ExitStack() as cleanup:
        validate(config, len(jax.devices()) if mesh is None else mesh.devices.size)
        cleanup.enter_context(workdir_lock(workdir))  # before anything reads or writes the workdir
        check_resume_compatible(saved_config(workdir), config)
        trainer = Trainer(config, mesh)
        t = config.train
        checkpoints = Checkpoints(workdir, config)
        cleanup.push(_closing_after(checkpoints.close))
        restored = checkpoints.restore_latest(trainer.abstract_state())
        if multihost.is_writer():  # the others may be reading these files
            write_config(workdir, config)  # only once the workdir's checkpoints are known to fit
            write_dataset_info(workdir, config.data.name, trainer.image_shape, trainer.num_classes)
        state = trainer.initial_state if restored is None else restored
        start = int(jax.device_get(state.step))
        resumed_from = None if restored is None else start
        if restored is not None:
            logging.info("resuming from step %d in %s", start, workdir)
        if multihost.is_writer():
            if start > t.num_steps:
                logging.warning("the newest checkpoint in %s is step %d, past train.num_steps=%d: "
                                "nothing to train, step %d is evaluated (another --workdir trains %d "
                                "steps afresh)", workdir, start, t.num_steps, start, t.num_steps)
            for line in objective.unfinished_schedules(config.objective, t.num_steps):
                logging.warning(line)
        log = MetricsLog(workdir, start) if multihost.is_writer() else _Unlogged()
        cleanup.push(_closing_after(log.close))
        log.start(start, resumed_from)
        profiler = profiling.StepProfiler(profile_dir(workdir), t.profile_start, t.profile_steps)
        cleanup.callback(profiler.stop)
        faults.point("startup")
        feed = cleanup.enter_context(contextlib.closing(trainer.feed(start)))
        interactive = sys.stderr.isatty()  # a log file gets a line every 30 s, not every step
        progress = cleanup.enter_context(tqdm(
            total=t.num_steps, initial=start, unit="step", dynamic_ncols=True,
            mininterval=0.1 if interactive else 30.0,
            disable=start >= t.num_steps or not multihost.is_writer()))
        stop_vote = multihost.StopVote(trainer.mesh)
        pending = None  # (first step, metrics [K] on device) of the previous call: read one call late
        skipped_in_a_row = 0  # non-finite steps since the last finite one
        tick, tick_step = time.perf_counter(), start

        def report(first, metrics):
            """Called one call late: the device has the next call queued meanwhile. The call ran
            updates first + 1 .. first + K; the record of update k is labelled step k."""
            nonlocal tick, tick_step, skipped_in_a_row
            end = first + len(metrics["loss"])
            flags = jax.device_get(metrics["nonfinite"])  # [K]
            bad = np.flatnonzero(flags)
            if t.nonfinite == "stop" and bad.size:
                raise NonFiniteLossError(
                    f"step {first + bad[0] + 1}: non-finite loss or gradient (update skipped); "
                    f"the last good checkpoint is step {checkpoints.latest_step()} in {workdir}")
            for s, flag in enumerate(flags, start=first + 1):
                skipped_in_a_row = skipped_in_a_row + 1 if flag else 0
                if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                    raise NonFiniteLossError(
                        f"steps {s - skipped_in_a_row + 1} to {s}: {skipped_in_a_row} non-finite "
                        f"steps in a row (each update skipped), so the parameters give no finite "
                        f"step; the last good checkpoint is step {checkpoints.latest_step()} in "
                        f"{workdir}")
            logged = [s for s in range(first + 1, end + 1)
                      if s == 1 or s % t.log_every == 0 or s == t.num_steps]
            if logged:
                host = jax.device_get(metrics)  # [K] each
                now = time.perf_counter()
                rate = (end - tick_step) * t.batch_size / max(now - tick, 1e-9)
                tick, tick_step = now, end
                for s in logged:
                    log.write("train", s, {**{k: v[s - first - 1] for k, v in host.items()},
                                           "samples_per_second": rate})
                    faults.point("logged", s)
                progress.set_postfix(loss=f"{host['loss'][logged[-1] - first - 1]:.2f}",
                                     samples_s=f"{rate:,.0f}")

        stopped = False  # a stop signal reached some process: all stop after the same step
        step = start  # updates done
        while step < t.num_steps:
            if stop_vote(stop.received is not None):
                stopped = True
                break
            k = call_length(step, t)
            faults.point("step", step + 1)
            profiler.before_step(step)
            with profiler.annotate(step):
                state, metrics = trainer.train_steps(state, feed.inputs(step, k), feed.resident,
                                                     trainer.key)
            profiler.after_step(step, state)
            if pending is not None:
                report(*pending)
            pending = (step, metrics)
            progress.update(k)
            step += k
            if step % t.checkpoint_every == 0:
                checkpoints.save(state)
            if t.eval_every and step % t.eval_every == 0 and step < t.num_steps:
                log.write("validation", step, trainer.evaluate(state))
        if pending is not None:
            report(*pending)
        if step > start:
            checkpoints.save(state, force=True)
        checkpoints.wait()  # on disk and sealed before the evaluation, which a signal may stop
        if stopped:
            logging.warning("%s: saved step %d in %s; rerun to resume",
                            f"{stop.received} received" if stop.received
                            else "another process received a stop signal", step, workdir)
            return {"interrupted_at_step": step, "resumed_from": resumed_from}
        try:
            with stop.interrupting():
                faults.point("final_evaluation")
                evaluation = trainer.evaluate(state)
        except _Interrupted:
            logging.warning("%s received: step %d is saved in %s; rerun to %s", stop.received,
                            step, workdir, "evaluate it" if step >= t.num_steps else "resume")
            return {"interrupted_at_step": step, "resumed_from": resumed_from}
        summary = {"step": step,
                   "resumed_from": resumed_from,
                   "nonfinite_steps": int(jax.device_get(state.nonfinite_steps)),
                   "num_devices": int(trainer.mesh.devices.size),
                   "split": "validation",
                   **evaluation}
        if not log.has("validation", step):  # a rerun of a finished run logs nothing new
            log.write("validation", step, evaluation)
        summary["provenance"] = provenance.record()
        if multihost.is_writer():
            write_summary(workdir, summary)
        if t.plots:
            _end_of_run_figures(trainer, workdir)
        return summary


def _end_of_run_figures(trainer: Trainer, workdir: str) -> None:
    """The cheap pictures of a finished run (``figures.draw_training_figures``), of the model
    restored from its final checkpoint as ``vscjax.load`` restores it. Every process takes part
    in the restore (the checkpoint read is agreed collectively); the writer alone draws."""
    model = trained.load(workdir, image_shape=trainer.image_shape, num_classes=trainer.num_classes)
    if multihost.is_writer():
        draw_training_figures(model, trainer.validation_data.images[:10], read_metrics(workdir),
                              plots_dir(workdir), rng.key(trainer.config.seed, "prior_samples"))


def summarise(summary: dict) -> str:
    """A short human-readable end-of-run summary."""
    if "interrupted_at_step" in summary:
        return f"interrupted at step {summary['interrupted_at_step']}; rerun the same command to resume"
    start = ("a fresh start" if summary["resumed_from"] is None
             else f"resumed from step {summary['resumed_from']}")
    lines = [f"step {summary['step']} on {summary['num_devices']} device(s), {start}",
             f"validation exact -ELBO   {summary['exact_neg_elbo']:9.2f} nats "
             f"(recon {summary['recon']:.2f}, slab KL {summary['slab_kl']:.2f}, "
             f"spike KL {summary['spike_kl']:.2f})",
             (f"validation relaxed -ELBO {summary['relaxed_neg_elbo']:9.2f} nats "
              f"(leak {summary['leak']:.2f})" if "leak" in summary
              else "validation relaxed -ELBO and leak n/a (trained on hard spikes)"),
             f"active dims: expected {summary['expected_active']:.2f}, "
             f"gamma > 0.5 {summary['active_count']:.2f}"]
    if summary["nonfinite_steps"]:
        lines.append(f"non-finite steps skipped: {summary['nonfinite_steps']}")
    return "\n".join(lines)
