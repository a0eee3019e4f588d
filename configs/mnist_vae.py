"""Plain VAE on MNIST (Gaussian prior, no spikes): the baseline of VSC, same network and budget.

    python train.py --config configs/mnist_vae.py --workdir workdir/mnist_vae

configs/mnist_vsc.py with model.prior = "gaussian": MLP 400, L=200, batch 128, 10,000 steps.
Measured results live in generated files, not here: the row "plain VAE (Gaussian prior)" of the
MNIST results in README.md and reports/README.md, from reports/results.json (`python
reports/make_report.py`).
"""

import os

from vscjax.config import load_file


def get_config():
    return load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_vsc.py"),
                     {"model.prior": "gaussian"})
