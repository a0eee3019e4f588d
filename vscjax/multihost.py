"""Several processes as one run: start-up, the one writer, agreed decisions, lost processes.

On TPU pods and multi-node GPU clusters every process runs the same command.
:func:`initialize` joins the processes (``jax.distributed.initialize``) before anything starts a
JAX backend. After that:

* process 0 alone writes files (:func:`is_writer`); every process takes part in every
  computation and in every checkpoint save and restore;
* what must be decided the same way everywhere is decided collectively: :func:`any_process`
  (is this checkpoint bad on any process? is the workdir taken?), :func:`value_of_process_0`
  (which checkpoint to read) and :class:`StopVote` (did any process receive SIGTERM or
  SIGINT?), so that all processes restore the same checkpoint and save at the same step;
* a heartbeat thread in every process notices a process that died or failed and stops this
  one with a one-line error; otherwise the next collective would wait for ever.

JAX's own preemption service is turned off: it would take SIGTERM for itself, and the stop vote
covers SIGINT too. For a single process every function here is local and cheap.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from vscjax import sharding

DEFAULT_HEARTBEAT_TIMEOUT = 30  # seconds of silence after which another process counts as lost
HEARTBEAT_INTERVAL = 1.0  # seconds between two heartbeats
HEARTBEAT_KEY = "vscjax/heartbeat/{}"
DONE, FAILED = "done", "failed"  # a heartbeat's last value: ended cleanly, or with an error
FLAG_HELP = {
    "coordinator_address": "host:port of process 0, where the processes of a multi-process run "
                           "meet; give it with --num_processes and --process_id (Cloud TPU and "
                           "SLURM find all three themselves)",
    "num_processes": "number of processes of a multi-process run",
    "process_id": "this process's index, 0 to num_processes - 1; process 0 writes the files",
    "heartbeat_timeout": "seconds without a heartbeat after which another process counts as lost "
                         f"and this one stops (default {DEFAULT_HEARTBEAT_TIMEOUT})",
}

_heartbeat: _Heartbeat | None = None


class MultihostError(ValueError):
    """The processes cannot form one run as asked; the message says why."""


def detected_cluster() -> tuple[str, int] | None:
    """(name, number of processes) of the cluster that JAX's automatic set-up recognises
    (Cloud TPU, SLURM, Open MPI, Kubernetes), or None; starts no backend."""
    from jax._src import clusters  # the detection jax.distributed.initialize() itself uses

    for env in clusters.ClusterEnv._cluster_types:
        if not env.opt_in_only_method and env.is_env_present():
            return env.name, int(env.get_process_count())
    return None


def _check_flags(coordinator_address, num_processes, process_id, heartbeat_timeout) -> None:
    given = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                 process_id=process_id)
    missing = [f"--{name}" for name, value in given.items() if value is None]
    if 0 < len(missing) < 3:
        present = [f"--{name}" for name, value in given.items() if value is not None]
        raise MultihostError(f"{' and '.join(present)} needs {' and '.join(missing)} too: give all "
                             "three, or none on Cloud TPU and SLURM")
    if heartbeat_timeout <= 0:
        raise MultihostError(f"--heartbeat_timeout must be positive, got {heartbeat_timeout}")
    if missing:
        return
    if num_processes < 1:
        raise MultihostError(f"--num_processes must be at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise MultihostError(f"--process_id must lie in [0, {num_processes}) for "
                             f"--num_processes={num_processes}, got {process_id}")
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit():
        raise MultihostError(f"--coordinator_address must be host:port, got {coordinator_address!r}")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT) -> None:
    """Join this process to the others of its run; call it before anything uses JAX devices.

    Give all of ``coordinator_address``, ``num_processes`` and ``process_id``, or none: then
    JAX's automatic detection decides (:func:`detected_cluster`), and a process that is not one
    of several in a detected cluster runs alone (nothing to do). With several processes a
    heartbeat thread starts (:func:`finish` ends it); JAX's own heartbeat, the backstop, is
    given twice ``heartbeat_timeout``.

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: number of processes.
      process_id: this process's index in [0, num_processes).
      heartbeat_timeout: seconds without a heartbeat after which another process is lost.

    Raises:
      MultihostError: flags that do not go together, or processes that cannot join.
    """
    _check_flags(coordinator_address, num_processes, process_id, heartbeat_timeout)
    if coordinator_address is None:
        cluster = detected_cluster()
        if cluster is None or cluster[1] < 2:
            return
        explicit = {}
    else:
        explicit = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                        process_id=process_id)
    jax.config.update("jax_enable_preemption_service", False)  # SIGTERM stays the StopVote's
    try:
        jax.distributed.initialize(**explicit, heartbeat_timeout_seconds=2 * int(heartbeat_timeout))
    except (RuntimeError, ValueError) as err:
        raise MultihostError(f"cannot join the other processes: {str(err).splitlines()[0]}") from err
    from jax._src import distributed  # the coordination service's client (no public handle)

    state = distributed.global_state
    if state.num_processes > 1:
        _start_heartbeat(state.client, state.process_id, state.num_processes, heartbeat_timeout)


def is_writer() -> bool:
    """True in the one process that writes files (logs, summaries, pictures, manifests): process 0."""
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """True in every process if ``flag`` is True in any of them (a blocking collective that
    every process must call at the same point)."""
    return bool(np.any(multihost_utils.process_allgather(np.bool_(flag))))


def value_of_process_0(value: int) -> int:
    """Process 0's ``value`` (an int32 integer) in every process: a collective every process
    calls at the same point, so that all act on one choice (for example the checkpoint read)."""
    if jax.process_count() == 1:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def barrier(name: str) -> None:
    """Wait until every process has reached the barrier ``name``."""
    multihost_utils.sync_global_devices(name)


class StopVote:
    """Whether any process was asked to stop, agreed by all processes one call late.

    Each call casts this process's vote for the current step and returns the outcome of the
    previous call (True if any process voted to stop): every process sees the same sequence of
    outcomes, so all of them stop after the same step, and reading the outcome one call late
    lets the device run the next step meanwhile. A single process needs no agreement: its own
    vote decides at once.
    """

    def __init__(self, mesh: jax.sharding.Mesh):
        self._mesh = mesh
        self._votes = sharding.batch_sharding(mesh)  # one vote per device
        self._any = jax.jit(jnp.max, out_shardings=sharding.replicated(mesh))
        self._pending = None  # the previous call's outcome, still on the devices

    def __call__(self, stop: bool) -> bool:
        """Vote ``stop`` for this step; returns the agreed outcome of the previous step's vote."""
        if jax.process_count() == 1:
            return stop
        local = np.full(len(self._mesh.local_devices), stop, np.int32)  # [local devices]
        votes = sharding.global_batch(local, self._votes, self._mesh.size)  # [devices]
        previous, self._pending = self._pending, self._any(votes)
        return previous is not None and bool(previous)


# ----------------------------------------------------------------------------- heartbeats


class _Heartbeat(threading.Thread):
    """Beats every HEARTBEAT_INTERVAL through the coordination service; stops this process
    with one line when another process has failed or stayed silent for ``timeout`` seconds."""

    def __init__(self, client, process_id: int, num_processes: int, timeout: float):
        super().__init__(name="vscjax-heartbeat", daemon=True)
        self.client = client
        self.key = HEARTBEAT_KEY.format(process_id)
        self.timeout = timeout
        self.ended = threading.Event()
        now = time.monotonic()
        self.last = {p: ("", now) for p in range(num_processes) if p != process_id}

    def beat(self, value: str) -> None:
        self.client.key_value_set(self.key, value, allow_overwrite=True)

    def run(self) -> None:
        beats = 0
        while not self.ended.wait(HEARTBEAT_INTERVAL):
            beats += 1
            try:
                self.beat(str(beats))
                values = {p: self.client.key_value_try_get(HEARTBEAT_KEY.format(p)) for p in self.last}
            except Exception as err:  # noqa: BLE001  the coordination service is gone
                _stop_process(f"lost process 0, the coordinator ({str(err).splitlines()[0][:120]})")
            now = time.monotonic()
            for p, value in values.items():
                if value == FAILED:
                    _stop_process(f"process {p} failed")
                if value == DONE:
                    del self.last[p]
                elif value != self.last[p][0]:
                    self.last[p] = (value, now)
                elif now - self.last[p][1] > self.timeout:
                    _stop_process(f"process {p} sent no heartbeat for {self.timeout:g} s (dead or stuck)")

    def end(self, value: str) -> None:
        """Stop beating; the last value tells the others how this process ended."""
        self.ended.set()
        self.join()
        try:
            self.beat(value)
        except Exception:  # noqa: BLE001  the others have gone already
            pass


def _stop_process(reason: str) -> None:
    """Leave at once with one line (a collective with a lost process would wait for ever)."""
    sys.stdout.flush()
    print(f"\n{os.path.basename(sys.argv[0])}: {reason}; stopping. Rerun every process to "
          "resume from the last checkpoint.", file=sys.stderr, flush=True)  # \n: after a progress bar
    os._exit(1)


def collective_failed(err: Exception) -> None:
    """A computation raised ``err`` (on CPUs gloo fails at once when another process's connection
    closes). In a multi-process run, wait for the heartbeat to name the lost process (it stops
    this one with that line), else stop with the error's first line; alone, return."""
    if _heartbeat is None:
        return
    deadline = time.monotonic() + _heartbeat.timeout + 5 * HEARTBEAT_INTERVAL
    while time.monotonic() < deadline:
        time.sleep(HEARTBEAT_INTERVAL)  # the heartbeat thread ends the process if a peer is lost
    _stop_process(f"a computation failed: {str(err).splitlines()[0][:200]}")


def _start_heartbeat(client, process_id: int, num_processes: int, timeout: float) -> None:
    global _heartbeat
    _heartbeat = _Heartbeat(client, process_id, num_processes, timeout)
    _heartbeat.beat("0")
    client.wait_at_barrier("vscjax/heartbeat/start", int(1000 * max(60.0, timeout)))
    _heartbeat.start()
    atexit.register(_exit_without_finish)


def finish() -> None:
    """Tell the other processes that this one ended cleanly; call it last in a command.

    A process of a multi-process run that exits without it (an error) tells the others it
    failed, so they stop at once rather than wait for it.
    """
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.end(DONE)
        _heartbeat = None


def _exit_without_finish() -> None:
    """At exit without :func:`finish`: report the failure and leave with status 1 (JAX's own
    shutdown would wait for processes that are stopping)."""
    if _heartbeat is not None:
        _heartbeat.end(FAILED)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
