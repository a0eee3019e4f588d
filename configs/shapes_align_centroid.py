"""VSC with the paper's class alignment loss (centroid form) on the synthetic shapes.

    python train.py --config configs/shapes_align_centroid.py --workdir workdir/shapes_align_centroid
    python reports/shapes_probe.py workdir/shapes_align_centroid

configs/shapes_vsc.py (fixed prior) with class-balanced batches of 120 (24 per class) and the
centroid alignment loss, weight 5 (the MNIST choice). The conv variant: add
--config.model.architecture=conv.
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "shapes_vsc.py"), {
        "data.balanced": True,
        "objective.align_mode": "centroid",
        "objective.align_weight.value": 5.0,
    })
