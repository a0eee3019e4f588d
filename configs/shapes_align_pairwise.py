"""VSC with the paper's class alignment loss (pairwise form) on the synthetic shapes.

    python train.py --config configs/shapes_align_pairwise.py --workdir workdir/shapes_align_pairwise
    python reports/shapes_probe.py workdir/shapes_align_pairwise

configs/shapes_align_centroid.py (fixed prior, class-balanced batches of 120) with the
pairwise alignment loss (mean over same-class pairs) at weight 2, the MNIST choice. The conv
variant: add --config.model.architecture=conv.
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "shapes_align_centroid.py"), {
        "objective.align_mode": "pairwise",
        "objective.align_weight.value": 2.0,
    })
