"""A trace of a window of training steps with ``jax.profiler``, for TensorBoard's profiler.

    python train.py --config configs/mnist.py --config.train.profile_steps=5 --config.train.profile_start=100
    pip install tensorboard tensorboard-plugin-profile
    tensorboard --logdir workdir/mnist/profile        # the "Profile" tab

Steps ``profile_start`` to ``profile_start + profile_steps - 1`` are traced into
``<workdir>/profile/plugins/profile/<time>/`` (an ``.xplane.pb`` for TensorBoard and a
``.trace.json.gz`` that Perfetto also opens), each step marked with a step annotation. Only
process 0 traces. Later steps are left out: the trace stops once the last traced step's
outputs are ready.
"""

from __future__ import annotations

import contextlib

import jax


class StepProfiler:
    """Starts and stops one ``jax.profiler`` trace around a window of training steps.

    Args:
      log_dir: the folder of the trace (``vscjax.workdir.profile_dir``: ``<workdir>/profile``).
      start: the first step traced.
      num_steps: steps traced; 0 traces nothing.
    """

    def __init__(self, log_dir: str, start: int, num_steps: int):
        self.log_dir = log_dir
        self.start, self.end = start, start + num_steps
        self.pending = num_steps > 0 and jax.process_index() == 0  # a trace is still to be taken
        self.active = False

    def before_step(self, step: int) -> None:
        """Start the trace if ``step`` is in the window (a resumed run starts where it is)."""
        if self.pending and self.start <= step < self.end:
            jax.profiler.start_trace(self.log_dir)
            self.pending, self.active = False, True

    def annotate(self, step: int):
        """A context marking ``step`` in the trace (nothing when not tracing)."""
        if not self.active:
            return contextlib.nullcontext()
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def after_step(self, step: int, outputs) -> None:
        """Stop the trace after the window's last step, once its ``outputs`` are computed."""
        if self.active and step + 1 >= self.end:
            self.stop(outputs)

    def stop(self, outputs=None) -> None:
        """Stop a running trace (after ``outputs`` are ready); nothing if none runs."""
        if self.active:
            jax.block_until_ready(outputs)
            jax.profiler.stop_trace()
            self.active = False
