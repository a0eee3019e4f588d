"""Class-mask prior on the synthetic shapes: learned spike logits per class (shared + offsets).

    python train.py --config configs/shapes_class_prior.py --workdir workdir/shapes_class_prior
    python reports/shapes_probe.py workdir/shapes_class_prior

configs/shapes_vsc.py (MLP 400, L=32, c from 1 to 30, 10,000 steps) with model.prior =
"class_mask": the spike logits of class y are g + h[y], the encoder never sees the label, and
the bound on -log p(x) is that of the mixture over the 5 classes. Class-balanced batches of 120
(24 per class), partial sharing 0.05 as on MNIST. The shapes' factors say what a good latent
space holds: x, y and scale in global dimensions, each class's own factor in a dimension of
its class. The conv variant: add --config.model.architecture=conv.
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "shapes_vsc.py"), {
        "model.prior": "class_mask",
        "data.balanced": True,
        "objective.partial_sharing": 0.05,
    })
