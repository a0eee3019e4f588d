"""Plain VSC on MNIST (the VSC paper's MLP setting): the baseline of the class-aware model.

    python train.py --config configs/mnist_vsc.py --workdir workdir/mnist_vsc

Real MNIST from IDX files ($VSCJAX_DATA_DIR/mnist, default ../shared/data/mnist beside the
checkout); Bernoulli likelihood, one hidden layer of 400, L=200, alpha=0.01, fixed prior,
batch 128, 10,000 steps, Adam 1e-3. Runtime here (2 CPU cores): TBD.
Expected result (measured, README): TBD
"""

from vscjax.config import base_config


def get_config():
    config = base_config()
    config.data.source = "idx"
    config.data.name = "mnist"
    config.model.hidden = (400,)
    config.model.latent_dim = 200
    config.objective.alpha = 0.01
    config.train.batch_size = 128
    config.train.num_steps = 10_000
    config.train.eval_every = 2_000
    config.train.eval_batch_size = 1000
    config.lock()
    return config
