"""Class-mask prior on MNIST with a large latent space: L=16,384.

    python train.py --config configs/large_latent.py --workdir workdir/large_latent
    python -m vscjax.evaluate --workdir workdir/large_latent

Another latent size L: ``--config configs/large_latent.py:L`` (alpha follows as 10 / L).

configs/mnist_class_prior.py (MLP 400, class-balanced batches of 120) with L=16,384 and the
prior spike probability scaled with L (alpha = 10 / L: about 10 expected active dimensions
under the prior, as alpha=0.05 gives at L=200), 5,000 steps, constant c=10, partial sharing
0.03, and the KL warmed up (its weight beta from 0 to 1 over the first 1,000 steps: without
it the run kept far fewer active dimensions and a higher training loss, in metrics.jsonl).
Measured results live in generated files, not here: the row "class-mask prior, L=16,384" of the
results in README.md and reports/README.md, from reports/results.json (`python
reports/make_report.py`).
"""

import os

from vscjax.config import load_file

LATENT_DIM = 16_384


def get_config(latent_dim=None):
    """The config at L = ``latent_dim`` (``configs/large_latent.py:L``; default 16,384), with
    alpha = 10 / L."""
    latent = LATENT_DIM if latent_dim is None else int(latent_dim)
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "mnist_class_prior.py"), {
        "model.latent_dim": latent,
        "objective.alpha": 10.0 / latent,
        "train.num_steps": 5_000,
        # constant c=10 and partial sharing 0.03, the class-mask prior's first tuned settings:
        # the ramp of mnist_class_prior.py is laid out over 10,000 steps, not 5,000
        "objective.c.kind": "constant",
        "objective.c.value": 10.0,
        "objective.c.start": 10.0,
        "objective.partial_sharing": 0.03,
        # The KL's weight rises from 0 to 1 over the first 1,000 steps (steps, not a share of
        # the run): at L=16,384 the first steps' KL, summed over every dimension, otherwise
        # switches nearly every dimension off before the decoder has learned to use any.
        "objective.beta.kind": "linear",
        "objective.beta.start": 0.0,
        "objective.beta.value": 1.0,
        "objective.beta.begin_step": 0,
        "objective.beta.end_step": 1_000,
        "train.eval_every": 0,
        "train.checkpoint_every": 500,
        "train.log_every": 50,
    })
