"""Train a config into a workdir, then evaluate it: the step every report, sweep and table repeats.

The one module that uses both the training loop and the evaluation; neither of them imports it.
"""

from __future__ import annotations

import ml_collections

from vscjax import evaluate, train


class RunInterrupted(RuntimeError):
    """The training run stopped before its last step (a stop signal); rerunning resumes it."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, split: str = "test",
                       **evaluate_options) -> dict:
    """Train (or resume, or reuse a finished run in) ``workdir``, then evaluate it on ``split``.

    Args:
      config: the run's config.
      workdir: the run's folder.
      split: the data split evaluated: "validation" for every choice of a hyperparameter,
        "test" for a report.
      **evaluate_options: passed on to ``evaluate.evaluate_workdir`` (``make_plots=False``...).

    Returns:
      The evaluation's results (the contents of its eval.json).

    Raises:
      RunInterrupted: the run was stopped before its end; nothing was evaluated.
    """
    summary = train.run(config, workdir)
    if "interrupted_at_step" in summary:
        raise RunInterrupted(f"{workdir} was interrupted at step {summary['interrupted_at_step']}; "
                             "rerun to resume")
    return evaluate.evaluate_workdir(workdir, split=split, **evaluate_options)
