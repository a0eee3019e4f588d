"""Plain VSC on the synthetic shapes: the baseline of the ground-truth factor metrics.

    python train.py --config configs/shapes_vsc.py --workdir workdir/shapes_vsc
    python reports/shapes_probe.py workdir/shapes_vsc

The shapes (vscjax/shapes.py; made in process, nothing to download): the full grid, 25,200
grey 32x32 images of 5 classes, each drawn from x, y and scale (global factors) and one factor
of its class's own. Bernoulli likelihood, MLP 400, L=32, alpha=0.1, fixed prior, batch 120,
10,000 steps, Adam 1e-3; straight-through spikes whose sharpness c rises exponentially from 1
to 30 over training, as on MNIST; the KL warmed up (its weight beta from 0 to 1 over the first
1,000 steps). Without the warm-up the conv model switches every spike off before its decoder
has learnt to use the code, and the slab variances of the switched-off dimensions then grow
until they overflow. The conv variant (stride-2 convolutions, base width
model.conv_channels): add --config.model.architecture=conv.
Runtime here (2 CPU cores): a few minutes for the MLP; hours for the conv model, which is
meant for an accelerator.
"""

from vscjax.config import base_config, schedule


def get_config():
    config = base_config()
    config.data.source = "shapes"
    config.data.name = "shapes"
    config.model.hidden = (400,)
    config.model.latent_dim = 32
    config.objective.alpha = 0.1
    config.objective.c = schedule("exponential", 30.0, start=1.0, begin_step=0, end_step=10_000)
    config.objective.beta = schedule("linear", 1.0, start=0.0, begin_step=0, end_step=1_000)
    config.train.batch_size = 120
    config.train.num_steps = 10_000
    config.train.eval_every = 2_000
    config.train.eval_batch_size = 1000
    config.lock()
    return config
