"""Plain VSC on MNIST (the VSC paper's MLP setting): the baseline of the class-aware model.

    python train.py --config configs/mnist_vsc.py --workdir workdir/mnist_vsc
    python -m vscjax.evaluate --workdir workdir/mnist_vsc

Real MNIST from IDX files ($VSCJAX_DATA_DIR/mnist, else ~/.cache/vscjax/mnist, downloaded on
first use); Bernoulli likelihood, one hidden layer of 400, L=200, alpha=0.01, fixed prior,
batch 128, 10,000 steps, Adam 1e-3; straight-through spikes whose sharpness c rises
exponentially from 1 to 30 over the run, the best validation bound of the sweeps over constant
c and ramps (reports/sweeps/vsc_c*.md, vsc_sched*.md).
Measured results live in generated files, not here: the row "VSC (fixed prior)" of the MNIST
results in README.md and reports/README.md, from reports/results.json (`python
reports/make_report.py`).
"""

from vscjax.config import base_config, run_end, schedule


def get_config():
    config = base_config()
    config.data.source = "idx"
    config.data.name = "mnist"
    config.model.hidden = (400,)
    config.model.latent_dim = 200
    config.objective.alpha = 0.01
    # The spike sharpness of the straight-through gradient rises from 1 to 30 over the whole run
    # (the best validation bound of reports/sweeps/: constant c in 3..100, ramps 3..30, 1..30);
    # its end follows train.num_steps.
    config.objective.c = schedule("exponential", 30.0, start=1.0, begin_step=0, end_step=run_end(config))
    config.train.batch_size = 128
    config.train.num_steps = 10_000
    config.train.eval_every = 2_000
    config.train.eval_batch_size = 1000
    config.lock()
    return config
