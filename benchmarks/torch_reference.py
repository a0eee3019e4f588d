"""The MLP VSC model and loss of vscjax, written in plain PyTorch: the benchmark's reference.

Same model (``vscjax.models.VSC`` with ``architecture="mlp"``, ``prior="fixed"``, Bernoulli
likelihood), same relaxed spike-and-slab sample, same exact KL and same alignment losses, with
the definitions and normalisations of ``vscjax/alignment.py`` (docs/design.md, "The model"). The
parity test (tests/test_torch_parity.py) checks that loss and gradients agree with vscjax's on
the same weights and noise. Shapes: images ``[B, H, W, C]`` (or ``[B, D]``), heads ``[B, L]``.

Only torch and numpy are imported: the weights of a vscjax model are read through its
attributes (``copy_weights_from_vscjax``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LOG2 = math.log(2.0)
ALIGN_MODES = ("off", "pairwise", "centroid")
# The cap on the elements of one pairwise block ([rows, B, L]), as in vscjax.alignment.
DEFAULT_BLOCK_ELEMENTS = 2**22


# ----------------------------------------------------------------------------- the model


class MLPVSC(nn.Module):
    """Encoder (hidden ReLU layers, one linear head of size 3L) and decoder (reversed hidden
    ReLU layers, linear to D Bernoulli logits), the layout of vscjax's MLPEncoder/MLPDecoder.
    """

    def __init__(self, image_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (400,)):
        super().__init__()
        pixels = math.prod(image_shape)
        enc, dec = [pixels, *hidden], [latent_dim, *reversed(hidden)]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc[:-1], enc[1:]))
        self.heads = nn.Linear(enc[-1], 3 * latent_dim)  # one matmul for mu, logvar, spike logit
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec[:-1], dec[1:]))
        self.out = nn.Linear(dec[-1], pixels)
        self.latent_dim = latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Posterior heads (mu, logvar, spike_logit), each [B, L] float32."""
        h = x.flatten(1)  # [B, D]
        for layer in self.encoder:
            h = F.relu(layer(h))
        mu, logvar, spike_logit = self.heads(h).float().chunk(3, dim=-1)
        return mu, logvar, spike_logit

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of the pixels, [B, D] float32."""
        h = z
        for layer in self.decoder:
            h = F.relu(layer(h))
        return self.out(h).float()


def _linear_pairs(torch_model: MLPVSC, jax_model) -> Iterator[tuple[nn.Linear, object]]:
    """(torch Linear, matching nnx.Linear) for every layer of the two models."""
    enc, dec = jax_model.encoder, jax_model.decoder
    jax_layers = [*enc.layers, enc.heads, *dec.layers, dec.out]
    torch_layers = [*torch_model.encoder, torch_model.heads, *torch_model.decoder, torch_model.out]
    if len(jax_layers) != len(torch_layers):
        raise ValueError(f"the models differ: {len(jax_layers)} JAX layers, {len(torch_layers)} torch layers")
    return zip(torch_layers, jax_layers)


def linear_arrays(torch_model: MLPVSC, jax_model) -> Iterator[tuple[str, torch.Tensor, np.ndarray]]:
    """(name, torch parameter, the JAX array in torch's layout) for every weight and bias.

    ``jax_model`` is a vscjax MLP ``VSC``, or ``nnx.merge(graphdef, grads)`` to read gradients.
    nnx.Linear's kernel is [in, out], torch's weight [out, in]: kernels come transposed. The
    encoder's heads hold a kernel [in, 3, L] and a bias [3, L]: read as [in, 3 L] and [3 L], the
    layout of torch's one Linear whose output is chunked into (mu, logvar, spike_logit).
    """
    for i, (t, j) in enumerate(_linear_pairs(torch_model, jax_model)):
        kernel, bias = np.asarray(j.kernel[...]), np.asarray(j.bias[...])
        yield f"layer{i}.weight", t.weight, kernel.reshape(kernel.shape[0], -1).T
        yield f"layer{i}.bias", t.bias, bias.reshape(-1)


@torch.no_grad()
def copy_weights_from_vscjax(torch_model: MLPVSC, jax_model) -> MLPVSC:
    """Overwrite ``torch_model``'s weights with those of a vscjax MLP ``VSC``; returns it."""
    for name, param, array in linear_arrays(torch_model, jax_model):
        if tuple(param.shape) != array.shape:
            raise ValueError(f"{name}: torch shape {tuple(param.shape)}, JAX shape {array.shape}")
        param.copy_(torch.tensor(array, dtype=param.dtype))
    return torch_model


# ----------------------------------------------------------------------------- spike and slab


def sample_from_noise(eta, eps, mu, logvar, spike_logit, *, c: float) -> torch.Tensor:
    """Relaxed sample ``sigmoid(c (eta + gamma - 1)) * (mu + sigma * eps)``, [B, L]."""
    mask = torch.sigmoid(c * (eta + torch.sigmoid(spike_logit) - 1.0))
    return mask * (mu + torch.exp(0.5 * logvar) * eps)


def sample(mu, logvar, spike_logit, *, c: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed sample with eta ~ U(0, 1), eps ~ N(0, 1) from ``generator`` (torch's global
    generator when None, which is what a torch.compile'd step uses), [B, L]."""
    eta = torch.rand(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return sample_from_noise(eta, eps, mu, logvar, spike_logit, c=c)


def kl(mu, logvar, spike_logit, *, alpha: float) -> torch.Tensor:
    """Exact per-sample KL to the prior ``alpha N(0, 1) + (1 - alpha) delta(0)``, [B]."""
    gamma, one_minus_gamma = torch.sigmoid(spike_logit), torch.sigmoid(-spike_logit)
    slab = 0.5 * (torch.exp(logvar) + mu.square() - 1.0 - logvar)  # KL(N(mu, s^2) || N(0, 1))
    spike = (gamma * (F.logsigmoid(spike_logit) - math.log(alpha))
             + one_minus_gamma * (F.logsigmoid(-spike_logit) - math.log1p(-alpha)))
    return torch.sum(gamma * slab + spike, dim=-1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy summed over pixels: logits [B, D], x [B, ...] -> [B]."""
    return F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(-1)


# ----------------------------------------------------------------------------- alignment


def _safe_log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))


def _bernoulli_stats(spike_logit: torch.Tensor):
    """gamma, 1 - gamma and H(gamma) from the logits, each [B, L] float32."""
    s = spike_logit.float()
    p, p_bar = torch.sigmoid(s), torch.sigmoid(-s)
    return p, p_bar, -(p * F.logsigmoid(s) + p_bar * F.logsigmoid(-s))


def _jsd(p, p_bar, h_p, q, q_bar, h_q) -> torch.Tensor:
    """JSD = H((p + q) / 2) - H(p) / 2 - H(q) / 2, clipped to [0, log 2] against rounding."""
    m, m_bar = 0.5 * (p + q), 0.5 * (p_bar + q_bar)
    h_m = -(m * _safe_log(m) + m_bar * _safe_log(m_bar))
    return torch.clamp(h_m - 0.5 * (h_p + h_q), 0.0, LOG2)


def _centroid_loss(spike_logit, labels, num_classes: int) -> torch.Tensor:
    p, p_bar, h_p = _bernoulli_stats(spike_logit)  # [B, L] each
    counts = torch.bincount(labels, minlength=num_classes).to(p.dtype)  # [C]
    denom = counts.clamp_min(1.0)[:, None]  # [C, 1]
    sums = torch.zeros(num_classes, p.shape[1], dtype=p.dtype, device=p.device)  # [C, L]
    mean = sums.index_add(0, labels, p) / denom  # [C, L]: class means of gamma
    mean_bar = sums.index_add(0, labels, p_bar) / denom  # [C, L]: and of 1 - gamma
    h_mean = -(mean * _safe_log(mean) + mean_bar * _safe_log(mean_bar))  # [C, L]
    jsd = _jsd(p, p_bar, h_p, mean[labels], mean_bar[labels], h_mean[labels])  # [B, L]
    weight = (counts >= 2).to(p.dtype)[labels]  # [B]: 1 if the class has a partner
    return torch.sum(weight * jsd.sum(-1)) / weight.sum().clamp_min(1.0)


def row_block(batch: int, latent: int, max_block_elements: int) -> int:
    """Largest divisor r of batch with r * batch * latent <= max_block_elements (at least 1)."""
    limit = max(1, max_block_elements // max(1, batch * latent))
    return max(r for r in range(1, min(batch, limit) + 1) if batch % r == 0)


def _pair_block(rp, rp_bar, rh, pair, p, p_bar, h_p) -> torch.Tensor:
    """Sum over the block's same-class pairs of sum_j JSD: rows [r, L], pair [r, B] -> [B]."""
    jsd = _jsd(rp[:, None], rp_bar[:, None], rh[:, None], p[None], p_bar[None], h_p[None])  # [r, B, L]
    return torch.where(pair, jsd.sum(-1), 0.0).sum(0)


def _pairwise_loss(spike_logit, labels, num_classes: int, max_block_elements: int) -> torch.Tensor:
    batch, latent = spike_logit.shape
    p, p_bar, h_p = _bernoulli_stats(spike_logit)  # [B, L] each
    index = torch.arange(batch, device=labels.device)
    pairs = (labels[:, None] == labels[None, :]) & (index[:, None] < index[None, :])  # [B, B]: a < b
    r = row_block(batch, latent, max_block_elements)
    total = p.new_zeros(batch)  # [B]
    for start in range(0, batch, r):
        rows = slice(start, start + r)
        # Recomputed in the backward pass, so no [r, B, L] block is kept: memory O(B * L).
        total = total + checkpoint(_pair_block, p[rows], p_bar[rows], h_p[rows], pairs[rows],
                                   p, p_bar, h_p, use_reentrant=False)
    counts = torch.bincount(labels, minlength=num_classes).to(p.dtype)  # [C]
    num_pairs = torch.sum(counts * (counts - 1.0) / 2.0)
    return total.sum() / num_pairs.clamp_min(1.0)


def dim_chunk(num_classes: int, per_class: int, latent: int, max_block_elements: int) -> int:
    """Dimensions per block of the class-major pairwise loss ([C, m, m, chunk] elements)."""
    return max(1, min(latent, max_block_elements // max(1, num_classes * per_class**2)))


def _class_block(p, p_bar, h_p, upper) -> torch.Tensor:
    """Sum over the pairs a < b inside each class block of sum_j JSD: [C, m, d] x 3 -> []."""
    jsd = _jsd(p[:, :, None], p_bar[:, :, None], h_p[:, :, None],
               p[:, None], p_bar[:, None], h_p[:, None])  # [C, m, m, d]
    return torch.where(upper, jsd.sum(-1), 0.0).sum()


def _check_class_major(labels, num_classes: int) -> None:
    batch = labels.shape[0]
    if batch % num_classes:
        raise ValueError(f"class_major needs a batch divisible by the {num_classes} classes, got {batch}")
    if torch.compiler.is_compiling():
        return  # a data-dependent check would break the graph: trusted, as under jax.jit
    expected = torch.arange(num_classes, device=labels.device).repeat_interleave(batch // num_classes)
    if not torch.equal(labels, expected):
        raise ValueError("class_major expects labels [0]*m + [1]*m + ... (a class-balanced batch "
                         "in class-major order)")


def _pairwise_class_blocks(spike_logit, num_classes: int, max_block_elements: int) -> torch.Tensor:
    """Pairwise loss of a class-major balanced batch: only pairs inside each class's block.

    The batch is viewed as [C, m, L] (m = B / C) and summed over chunks of dimensions, each
    recomputed in the backward pass: B * m * L work and O(B * L) memory.
    """
    batch, latent = spike_logit.shape
    m = batch // num_classes
    p, p_bar, h_p = (t.reshape(num_classes, m, latent) for t in _bernoulli_stats(spike_logit))  # [C, m, L]
    upper = torch.ones(m, m, dtype=torch.bool, device=p.device).triu(1)  # [m, m]: each pair a < b once
    chunk = dim_chunk(num_classes, m, latent, max_block_elements)
    total = p.new_zeros(())
    for start in range(0, latent, chunk):
        dims = slice(start, start + chunk)
        total = total + checkpoint(_class_block, p[..., dims], p_bar[..., dims], h_p[..., dims],
                                   upper, use_reentrant=False)
    return total / max(1.0, num_classes * m * (m - 1) / 2)


def class_alignment_loss(spike_logit, labels, num_classes: int, *, mode: str = "centroid",
                         class_major: bool = False,
                         max_block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """vscjax.alignment.class_alignment_loss in torch: spike_logit [B, L], labels [B] in
    [0, num_classes) -> a float32 scalar.

    "pairwise": mean over same-class pairs a < b of sum_j JSD(gamma_a, gamma_b), in row blocks
    of at most ``max_block_elements`` elements; "centroid": mean, over the samples whose class
    has at least two members, of sum_j JSD(gamma_a, the class's mean gamma). ``class_major``
    (pairwise only): the batch is class-balanced in class-major order (labels ``[0]*m + [1]*m
    + ...``, checked unless under torch.compile), so only the pairs inside each class's block
    are compared, in blocks of dimensions ([C, m, m, dims], at most ``max_block_elements``).
    """
    if mode == "centroid":
        return _centroid_loss(spike_logit, labels, num_classes)
    if mode == "pairwise" and class_major:
        _check_class_major(labels, num_classes)
        return _pairwise_class_blocks(spike_logit, num_classes, max_block_elements)
    if mode == "pairwise":
        return _pairwise_loss(spike_logit, labels, num_classes, max_block_elements)
    raise ValueError(f"unknown alignment mode {mode!r}; expected 'pairwise' or 'centroid'")


# ----------------------------------------------------------------------------- loss and step


def vsc_loss(model: MLPVSC, x, labels, *, c: float, alpha: float, align_mode: str = "off",
             align_weight: float = 1.0, num_classes: int = 10, class_major: bool = False,
             noise: tuple[torch.Tensor, torch.Tensor] | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """``mean_B(recon NLL + KL) + align_weight * align``, the vscjax objective (beta = 1).

    The sample uses ``noise = (eta, eps)`` ([B, L] each) when given, else fresh noise from
    ``generator``. ``class_major`` as in ``class_alignment_loss`` (vscjax's
    ``make_train_step(..., class_major=True)``).
    """
    if align_mode not in ALIGN_MODES:
        raise ValueError(f"unknown alignment mode {align_mode!r}; expected one of {ALIGN_MODES}")
    mu, logvar, spike_logit = model.encode(x)
    if noise is None:
        z = sample(mu, logvar, spike_logit, c=c, generator=generator)
    else:
        z = sample_from_noise(*noise, mu, logvar, spike_logit, c=c)
    loss = torch.mean(bernoulli_nll(model.decode(z), x) + kl(mu, logvar, spike_logit, alpha=alpha))
    if align_mode != "off":
        loss = loss + align_weight * class_alignment_loss(spike_logit, labels, num_classes,
                                                          mode=align_mode, class_major=class_major)
    return loss


def make_train_step(model: MLPVSC, optimizer: torch.optim.Optimizer, *,
                    autocast_dtype: torch.dtype | None = None, **loss_kwargs
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The full step ``(x [B, ...], labels [B]) -> loss`` (a detached scalar): ``vsc_loss``
    with fresh noise from torch's global generator, backward, ``optimizer.step()``.

    Usable eagerly or as ``torch.compile(make_train_step(...))``. ``loss_kwargs`` go to
    ``vsc_loss`` (c, alpha, align_mode, align_weight, num_classes, class_major).
    ``autocast_dtype`` (e.g. torch.bfloat16) runs the matmuls under ``torch.autocast``, like
    vscjax's ``model.dtype``; the heads and every loss term stay float32.
    """
    device_type = next(model.parameters()).device.type

    def train_step(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = vsc_loss(model, x, labels, **loss_kwargs)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return train_step
