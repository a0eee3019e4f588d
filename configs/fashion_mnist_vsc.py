"""Plain VSC on Fashion-MNIST: configs/mnist_vsc.py on the Fashion-MNIST IDX files.

    python train.py --config configs/fashion_mnist_vsc.py --workdir workdir/fashion_mnist_vsc
    python -m vscjax.evaluate --workdir workdir/fashion_mnist_vsc

MLP 400, L=200, alpha=0.01, fixed prior, batch 128, 10,000 steps, straight-through spikes with
the sharpness ramp of mnist_vsc.py (c from 1 to 30). On Fashion-MNIST's validation split the
ramp gave 254.8 nats against 259.4 (c=3), 256.0 (c=10) and 256.8 (c=25) for constant
sharpness (reports/sweeps/).
Test set (`python reports/make_report.py`): bound 255.7 nats, active count 2.1, Jaccard
same / different class 0.267 / 0.040, probe 82.3%.
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "mnist_vsc.py"), {"data.name": "fashion_mnist"})
