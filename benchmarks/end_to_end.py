"""End to end: the trainer's own loop (data, step, logging) beside the bare step, vscjax and torch.

    python -m benchmarks.throughput --end-to-end    # L 200, 3200; B 128 (~5 minutes on 2 cores)
    python -m benchmarks.throughput --end-to-end --smoke --out /tmp/e2e.json   # checks it runs
    python -m benchmarks.throughput --end-to-end --device gpu --latent 3200 --batch 512
    python -m benchmarks.throughput --from benchmarks/results/cpu-end-to-end.json

The run times above are estimates from the sizes, not measurements.

Every configuration (L, B, alignment, dtype) gets these rows, trained on MNIST's IDX files
(``$VSCJAX_DATA_DIR/mnist``), every contender starting from the same weights:

* bare steps, as ``benchmarks.throughput`` times them (one batch already on the device):
  ``vscjax``, ``vscjax K steps/call``, ``torch eager``, ``torch.compile``;
* ``vscjax train.py``: ``vscjax.train.run``, the loop ``train.py`` runs, with host feeding
  (``data.placement="host"``: batches gathered on the host and copied by a background thread),
  with device feeding (the training set resident on the device, one step per call), and with
  device feeding and ``train.steps_per_call=K``; checkpoints and evaluation only at the end;
* ``torch eager loop`` and ``torch.compile loop``: a standard PyTorch loop over a
  ``DataLoader`` (``TensorDataset`` of the float32 images, shuffled, ``drop_last``,
  ``--loader-workers`` workers, pinned memory on GPU), each batch moved with ``.to(device)``,
  then the reference step; ``loss.item()`` at every logged step.

Timing of a loop: its samples/s between consecutive logged steps (for vscjax the trainer's own
``samples_per_second`` records in ``metrics.jsonl``; the torch loop measures the same way), the
first interval (compilation) left out, median over the rest. Logged steps are ``log_every``
apart, ``log_every`` sized from the bare step so an interval lasts at least a second (quick
grid). Every loop runs on one device.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time

from benchmarks import harness
from vscjax.atomic import write_json_atomic
from vscjax.tables import fmt

LOOP_INTERVALS = {"smoke": 3, "quick": 6, "full": 10}  # timed intervals of each loop run
LOOP_INTERVAL_S = {"smoke": 0.0, "quick": 1.0, "full": 2.0}  # least length of an interval
DEFAULT_STEPS_PER_CALL = 8


def load_mnist(log):
    """MNIST's training split (vscjax.data, IDX files in $VSCJAX_DATA_DIR/mnist)."""
    from vscjax import data

    try:
        dataset = data.load("idx", "mnist", "train")
    except data.DataError as err:
        raise SystemExit(f"--end-to-end trains on MNIST's IDX files: {err}") from None
    log(f"data: {dataset.name}, {len(dataset.labels):,} images {dataset.images.shape[1:]}")
    return dataset


def trainer_config(latent, batch, align, dtype, hidden, *, placement: str, steps_per_call: int,
                   log_every: int, num_steps: int):
    """``benchmarks.harness``'s vscjax config, trained by ``vscjax.train.run`` on MNIST."""
    config = harness.vscjax_config(latent, batch, align, dtype, hidden)
    config.data.source, config.data.name, config.data.placement = "idx", "mnist", placement
    t = config.train
    t.steps_per_call, t.log_every, t.num_steps = steps_per_call, log_every, num_steps
    t.checkpoint_every, t.max_to_keep, t.eval_every, t.plots = num_steps, 1, 0, False
    return config


def vscjax_loop_rates(config) -> list[float]:
    """samples/s of ``vscjax.train.run``'s logged intervals, the first (compilation) left out.

    The run uses one device, like the bare steps beside it.
    """
    import jax

    from vscjax import sharding, train
    from vscjax.workdir import read_metrics

    with tempfile.TemporaryDirectory() as workdir:
        train.run(config, workdir, mesh=sharding.make_data_mesh(jax.devices()[:1]))
        records = read_metrics(workdir)
    rates = [r["samples_per_second"] for r in sorted(records, key=lambda r: r["step"])
             if "samples_per_second" in r]
    return rates[1:]


def torch_loop_rates(step, target: str, dataset, batch: int, *, log_every: int, num_steps: int,
                     workers: int) -> list[float]:
    """samples/s of a DataLoader training loop's logged intervals, the first left out.

    Args:
      step: the reference step ``(x, labels) -> loss`` (``harness.torch_train_step``).
      target: the torch device ("cpu" or "cuda").
      dataset: the vscjax training set (float32 images, int32 labels in host memory).
      batch: batch size.
      log_every: steps between logged steps (``loss.item()`` and a time stamp).
      num_steps: steps to run (epochs repeat as needed).
      workers: DataLoader worker processes.
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.from_numpy(dataset.images),
                                      torch.from_numpy(dataset.labels).long()),
                        batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=target == "cuda")
    rates, done = [], 0
    tick, tick_step = time.perf_counter(), 0
    while done < num_steps:
        for x, labels in loader:
            loss = step(x.to(target, non_blocking=True), labels.to(target, non_blocking=True))
            if done % log_every == 0 or done == num_steps - 1:
                loss.item()  # what a logged step costs: the host waits for the loss
                now = time.perf_counter()
                rates.append((done + 1 - tick_step) * batch / max(now - tick, 1e-9))
                tick, tick_step = now, done + 1
            done += 1
            if done == num_steps:
                break
    return rates[1:]


def loop_row(where: dict, contender: str, feed: str, steps_per_call: int,
             rates: list[float], bare_rate: float) -> dict:
    """A loop's result row: median and slow tail of its intervals, its share of the bare step."""
    median = statistics.median(rates)
    return {**where, "contender": contender, "feed": feed, "steps_per_call": steps_per_call,
            "samples_per_s_median": median, "samples_per_s_p10": harness.percentile(rates, 0.1),
            "intervals": len(rates), "rates": rates, "of_bare_step": median / bare_rate}


def run_configuration(latent, batch, align, dtype, hidden, device, dataset, grid, peaks,
                      steps_per_call, workers, log) -> tuple[list[dict], list[dict]]:
    """Bare steps, then the loops of one configuration; returns (results, skipped).

    ``log_every`` of the loops is sized from vscjax's bare step so an interval lasts at least
    ``LOOP_INTERVAL_S`` of the grid, in whole calls of ``steps_per_call`` steps.
    """
    schedule = {k: grid[k] for k in ("warmup", "repeats", "min_repeat_s")}
    bare, skipped = harness.run_configuration(latent, batch, align, dtype, hidden, device,
                                              schedule, peaks, harness.CONTENDERS, log,
                                              steps_per_call)
    for row in bare:
        multi = row["contender"] == harness.multi_step_name(steps_per_call)
        row.update(feed="on device (one batch)", steps_per_call=steps_per_call if multi else 1,
                   of_bare_step=None)
    bare_rate = {row["contender"]: row["samples_per_s_median"] for row in bare}
    if "vscjax" not in bare_rate:  # out of memory: no loop of this size either
        return bare, skipped
    step_s = batch / bare_rate["vscjax"]
    log_every = max(1, math.ceil(LOOP_INTERVAL_S[grid["name"]] / step_s))
    log_every = math.ceil(log_every / steps_per_call) * steps_per_call  # whole calls
    num_steps = log_every * (LOOP_INTERVALS[grid["name"]] + 1)
    where = dict(latent=latent, batch=batch, align=align, dtype=dtype, log_every=log_every,
                 num_steps=num_steps)
    results = []
    loops = [("host", 1), ("device", 1)]
    if steps_per_call > 1:
        loops.append(("device", steps_per_call))
    for feed, k in loops:
        config = trainer_config(latent, batch, align, dtype, hidden, placement=feed,
                                steps_per_call=k, log_every=log_every, num_steps=num_steps)
        rates = vscjax_loop_rates(config)
        results.append(loop_row(where, "vscjax train.py", feed, k, rates, bare_rate["vscjax"]))
        log(f"  vscjax train.py, {feed} feed, {k} steps/call: "
            f"{results[-1]['samples_per_s_median']:,.0f} samples/s")
    jax_model = _initial_model(latent, batch, align, dtype, hidden)
    for name, compiled in (("torch eager", False), ("torch.compile", True)):
        if name not in bare_rate:
            continue
        step, target = harness.torch_train_step(jax_model, latent, align, dtype, hidden, device,
                                           compiled)
        rates = torch_loop_rates(step, target, dataset, batch, log_every=log_every,
                                 num_steps=num_steps, workers=workers)
        results.append(loop_row(where, f"{name} loop", f"DataLoader, {workers} workers", 1,
                                rates, bare_rate[name]))
        log(f"  {name} loop: {results[-1]['samples_per_s_median']:,.0f} samples/s")
    for row in results:  # every loop against the torch loops
        for other, key in (("torch eager loop", "ratio_vs_torch_eager_loop"),
                           ("torch.compile loop", "ratio_vs_torch_compile_loop")):
            base = [o["samples_per_s_median"] for o in results if o["contender"] == other]
            row[key] = row["samples_per_s_median"] / base[0] if base else None
    return bare + results, skipped


def _initial_model(latent, batch, align, dtype, hidden):
    """The vscjax model at initialisation: every contender's starting weights."""
    from flax import nnx

    from vscjax.state import initial_state

    config = harness.vscjax_config(latent, batch, align, dtype, hidden)
    graphdef, state, _ = initial_state(config, harness.IMAGE_SHAPE, harness.NUM_CLASSES)
    return nnx.merge(graphdef, state.params)


def markdown_table(results: list[dict]) -> str:
    """Bare steps and loops, one row each."""
    head = ("| L | B | align | dtype | contender | feed | steps/call | samples/s median "
            "| of its bare step | vs torch eager loop | vs torch.compile loop |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        rows.append("| " + " | ".join([
            str(r["latent"]), str(r["batch"]), r["align"], r["dtype"], r["contender"], r["feed"],
            fmt(r["steps_per_call"], "d"), f"{r['samples_per_s_median']:,.0f}",
            fmt(r["of_bare_step"], ".2f"), fmt(r.get("ratio_vs_torch_eager_loop"), ".2f"),
            fmt(r.get("ratio_vs_torch_compile_loop"), ".2f"),
        ]) + " |")
    return "\n".join(rows)


def report_text(report: dict) -> str:
    """The header lines, the table and the notes."""
    versions = ", ".join(f"{k} {v}" for k, v in harness.report_versions(report).items())
    lines = [f"device: {report['device']} ({report['platform']}), threads: {report['threads']}; {versions}",
             f"quiet check: {report['quiet']['output']}", "", markdown_table(report["results"]), ""]
    lines += [f"skipped: L={s['latent']} B={s['batch']} {s['align']} {s['dtype']} {s['contender']}: "
              f"{s['reason']}" for s in report["skipped"]]
    return "\n".join(lines + report["notes"])


def run(args, header: dict, log) -> None:
    """``--end-to-end``: every configuration of the grid, a JSON report and the table."""
    grid = {**harness.GRIDS[args.grid], "name": args.grid}
    hidden = tuple(args.hidden or grid["hidden"])
    dtypes = harness.run_dtypes(args)
    out = harness.results_path(args, f"{args.device}-end-to-end.json")
    steps_per_call = args.steps_per_call or DEFAULT_STEPS_PER_CALL
    dataset = load_mnist(log)
    peaks = {dtype: harness.matmul_peak_gflops(grid["matmul_n"][args.device], dtype)
             for dtype in dtypes}
    configs = harness.grid_configurations(args)
    if not (args.latent or args.batch or args.align):  # the grid's sizes, without alignment
        configs = [c for c in configs if c[2] == "off"]
    results, skipped = [], []
    began = time.perf_counter()
    for latent, batch, align in configs:
        for dtype in dtypes:
            if args.max_minutes and time.perf_counter() - began > 60 * args.max_minutes:
                skipped.append(dict(latent=latent, batch=batch, align=align, dtype=dtype,
                                    contender="all", reason="time budget (--max-minutes) spent"))
                continue
            log(f"L={latent} B={batch} align={align} {dtype}")
            r, s = run_configuration(latent, batch, align, dtype, hidden, args.device, dataset,
                                     grid, peaks, steps_per_call, args.loader_workers, log)
            results += r
            skipped += s
    report = {
        "kind": "end_to_end", **header, "grid": args.grid, "hidden": list(hidden),
        "data": dataset.name, "matmul_peak_gflops": peaks, "results": results, "skipped": skipped,
        "notes": [
            "bare step: one batch already on the device, as benchmarks.throughput times it; "
            "loops: samples/s between logged steps, the first interval (compilation) left out.",
            "vscjax train.py: vscjax.train.run (the loop of train.py) with its MetricsLog "
            "(metrics.jsonl and TensorBoard at each logged step); host feed = data.placement "
            "'host', device feed = the training set resident on the device.",
            "of its bare step: the loop's samples/s over its own framework's bare step "
            "(vscjax loops over the 1-step-per-call vscjax step).",
        ],
        "wall_s": time.perf_counter() - began,
    }
    write_json_atomic(out, report, indent=2)
    print(markdown_table(results) if args.readme_table else report_text(report))
    log(f"wrote {out}")
