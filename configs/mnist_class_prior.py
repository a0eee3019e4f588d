"""Class-mask prior on MNIST: learned spike logits per class (shared + class offsets).

    python train.py --config configs/mnist_class_prior.py --workdir workdir/mnist_class_prior
    python -m vscjax.evaluate --workdir workdir/mnist_class_prior

configs/mnist_vsc.py (MLP 400, L=200, 10,000 steps) with model.prior = "class_mask" and
class-balanced batches of 120 (12 per class). Values chosen on the validation split.
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "mnist_vsc.py"), {
        "model.prior": "class_mask",
        "data.balanced": True,
        "train.batch_size": 120,
        "objective.alpha": 0.05,
        "objective.c.kind": "constant",  # c = 10 throughout (the ramp of mnist_vsc.py lost here)
        "objective.c.value": 10.0,
        "objective.c.start": 10.0,
        "objective.sparsity_weight": 1.0,
        "objective.class_prior_penalty": 0.0,
        "objective.partial_sharing": 0.03,
    })
