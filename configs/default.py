"""Default: plain VSC on scikit-learn's embedded digits (no network, no files).

    python train.py            # = python train.py --config configs/default.py

1,437 training and 360 test images of 8x8 digits; MLP 256, L=32, alpha=0.1, straight-through
spikes (c=10), 3,000 steps of batch 64. Runtime here (2 CPU cores): about 15 seconds.
Measured here: test exact -ELBO 26.1 nats (recon 23.5, slab KL 1.5, spike KL 1.1), relaxed 25.9
(leak 0.2), 4.5 expected active dims; 12 s of wall time.
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
