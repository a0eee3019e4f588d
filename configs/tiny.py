"""Tiny: a seconds-long run on the embedded digits, for tests and smoke checks.

    python train.py --config configs/tiny.py --workdir /tmp/tiny

MLP 32, L=16, batch 32, 40 steps, checkpoints every 10 steps. Expected result: a finite exact
-ELBO below the untrained model's (tests/test_train.py checks it).
"""

from vscjax.config import base_config


def get_config():
    config = base_config()
    config.model.hidden = (32,)
    config.model.latent_dim = 16
    config.objective.alpha = 0.1
    config.objective.align_mode = "centroid"
    config.objective.align_weight.value = 1.0
    config.train.batch_size = 32
    config.train.num_steps = 40
    config.train.log_every = 10
    config.train.checkpoint_every = 10
    config.train.eval_batch_size = 120
    config.train.plots = False
    config.lock()
    return config
