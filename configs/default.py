"""Default: plain VSC on scikit-learn's embedded digits (no network, no files).

    python train.py            # = python train.py --config configs/default.py
    python -m vscjax.evaluate --workdir workdir/default

1,437 training and 360 test images of 8x8 digits (of the training images, 120 are held out
for validation); MLP 256, L=32, alpha=0.1, straight-through spikes with c=10 (the best
validation bound of c in 3, 10, 25, 100: reports/sweeps/default_c.md), 3,000 steps of batch
64. The run prints its validation numbers; `python -m vscjax.evaluate` gives the test set's.
"""

from vscjax.config import base_config


def get_config():
    config = base_config()
    config.model.hidden = (256,)
    config.model.latent_dim = 32
    config.objective.alpha = 0.1
    config.train.batch_size = 64
    config.train.num_steps = 3000
    config.train.log_every = 100
    config.train.checkpoint_every = 1000
    config.train.eval_batch_size = 120
    config.lock()
    return config
