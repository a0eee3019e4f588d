"""Class-aware VSC on MNIST with a large latent space: L=16,384, pairwise alignment.

    python train.py --config configs/large_latent.py --workdir workdir/large_latent
    python -m vscjax.evaluate --workdir workdir/large_latent

configs/mnist_vsc.py (MLP 400, fixed prior, Adam 1e-3) with L=16,384 and alpha=0.001 (a prior
of about 16 expected active dims), class-balanced batches of 120 (12 per class, class-major),
so the pairwise alignment loss takes its class-block path (B * B * L / C work), weight 10;
800 steps, one checkpoint at 500, one test evaluation at the end.
Runtime here (2 CPU cores): an estimate from one 20-step trial, not a full run. The trial ran
at 1.8 s/step while another training job kept about 1.9 of the 2 cores busy (this process got
about one core); on a quiet machine that suggests about 0.9 s/step, so 800 steps take about
12-13 minutes with start-up, compilation and the final evaluation (about 25 minutes if the
machine is shared as in the trial).
Expected result: TBD (filled in from a measured run)
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "mnist_vsc.py"), {
        "model.latent_dim": 16_384,
        "objective.alpha": 0.001,
        "data.balanced": True,
        "train.batch_size": 120,
        "objective.align_mode": "pairwise",
        "objective.align_weight.value": 10.0,
        "train.num_steps": 800,
        "train.eval_every": 0,
        "train.eval_batch_size": 1000,
        "train.checkpoint_every": 500,
    })
