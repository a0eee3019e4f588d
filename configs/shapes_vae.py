"""Plain VAE on the synthetic shapes (Gaussian prior, no spikes): VSC's baseline, same network.

    python train.py --config configs/shapes_vae.py --workdir workdir/shapes_vae

configs/shapes_vsc.py with model.prior = "gaussian": MLP 400, L=32, batch 120, 10,000 steps.
The conv variant: add --config.model.architecture=conv.
"""

import os

from vscjax.config import load_file


def get_config():
    return load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes_vsc.py"),
                     {"model.prior": "gaussian"})
