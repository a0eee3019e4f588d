"""Class-aware alignment loss: make the active latent dimensions of same-class samples agree.

Pure functions of arrays (no state, no other vscjax module). Each spike probability
``gamma_j = sigmoid(spike_logit_j)`` is read as a Bernoulli "dimension j is active"
variable, and two samples are compared by the sum over dimensions of the Jensen-Shannon
divergence of their Bernoullis (docs/design.md, "The alignment loss").

Numerics: probabilities and their complements come from the logits (``sigmoid(s)`` and
``sigmoid(-s)``, both accurate where the other saturates), entropies of the samples from
``log_sigmoid``, and the only logs of probabilities (the mixtures) go through
``log(maximum(x, tiny))``, which is finite with a finite gradient even where a class mean of
gamma is exactly 0 or 1 in float32.

Decisions the paper leaves open (ours, used by every test):

* ``pairwise``: the mean, over all same-class pairs ``a < b`` of the (global) batch, of
  ``sum_j JSD(gamma_aj, gamma_bj)``. Every pair weighs the same, so large classes weigh more.
* ``centroid``: the mean, over the samples whose class has at least two members in the batch,
  of ``sum_j JSD(gamma_aj, m_{y_a j})`` with ``m_c`` the class's mean of gamma. Gradients flow
  through ``m_c`` too.
* Classes absent from the batch, or present once, contribute nothing; a batch with no
  same-class pair gives 0.
* Labels outside ``[0, num_classes)``: a ``ValueError`` when the labels are concrete (eager
  call); under ``jit`` they cannot be inspected, and such samples are masked out (treated as
  belonging to no class).

Sharding: the statistics are over the global batch. The functions work on batch-sharded
inputs under any mesh; with Explicit axes (the default of ``jax.make_mesh`` in JAX 0.10)
they replicate the side of each outer comparison that must be seen whole.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

LOG2 = math.log(2.0)
MODES = ("pairwise", "centroid")
REDUCTIONS = ("sum", "mean")  # over the L dimensions of each JSD
# Default cap on the elements of one pairwise block ([rows, B, L]); 2**22 floats = 16 MiB.
DEFAULT_BLOCK_ELEMENTS = 2**22


# ----------------------------------------------------------------------------- Bernoulli JSD


def _safe_log(x: jax.Array) -> jax.Array:
    return jnp.log(jnp.maximum(x, jnp.finfo(x.dtype).tiny))


def _entropy_from_logit(logit: jax.Array) -> jax.Array:
    """H(sigmoid(logit)) from log-sigmoids: finite value and gradient at any logit."""
    return -(
        jax.nn.sigmoid(logit) * jax.nn.log_sigmoid(logit)
        + jax.nn.sigmoid(-logit) * jax.nn.log_sigmoid(-logit)
    )


def _mixture_entropy(p, p_bar, q, q_bar) -> jax.Array:
    """H((p + q) / 2) from both probabilities and both complements."""
    m = 0.5 * (p + q)
    m_bar = 0.5 * (p_bar + q_bar)
    return -(m * _safe_log(m) + m_bar * _safe_log(m_bar))


def _jsd(p, p_bar, h_p, q, q_bar, h_q) -> jax.Array:
    """JSD = H((p+q)/2) - H(p)/2 - H(q)/2, clipped to [0, log 2] against rounding."""
    return jnp.clip(_mixture_entropy(p, p_bar, q, q_bar) - 0.5 * (h_p + h_q), 0.0, LOG2)


def bernoulli_jsd(p_logit: jax.Array, q_logit: jax.Array) -> jax.Array:
    """Elementwise Jensen-Shannon divergence of Bernoulli(sigmoid(p)) and Bernoulli(sigmoid(q)).

    Args:
      p_logit, q_logit: logits of the two Bernoulli probabilities; they broadcast.

    Returns:
      JSD in nats, in [0, log 2], with the broadcast shape.
    """
    return _jsd(
        jax.nn.sigmoid(p_logit),
        jax.nn.sigmoid(-p_logit),
        _entropy_from_logit(p_logit),
        jax.nn.sigmoid(q_logit),
        jax.nn.sigmoid(-q_logit),
        _entropy_from_logit(q_logit),
    )


# ----------------------------------------------------------------------------- sharding helpers


def _explicit_replicated(x: jax.Array) -> NamedSharding | None:
    """A replicated sharding on x's mesh when x lives on a mesh with Explicit axes, else None."""
    mesh = getattr(jax.typeof(x).sharding, "mesh", None)
    if mesh is None or AxisType.Explicit not in tuple(getattr(mesh, "axis_types", ())):
        return None
    return NamedSharding(mesh, PartitionSpec())


def _replicate(x: jax.Array) -> jax.Array:
    """x seen whole on every device (a no-op unless x's mesh has Explicit axes)."""
    sharding = _explicit_replicated(x)
    return x if sharding is None else jax.sharding.reshard(x, sharding)


# ----------------------------------------------------------------------------- the loss


def _check_inputs(spike_logit, labels, num_classes: int, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown alignment mode {mode!r}; expected one of {MODES}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if spike_logit.ndim != 2 or labels.ndim != 1 or labels.shape[0] != spike_logit.shape[0]:
        raise ValueError(
            "class_alignment_loss expects spike_logit [B, L] and labels [B]; got "
            f"spike_logit {tuple(spike_logit.shape)} and labels {tuple(labels.shape)}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    try:
        host_labels = np.asarray(labels)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return  # traced under jit: out-of-range labels are masked out instead
    bad = host_labels[(host_labels < 0) | (host_labels >= num_classes)]
    if bad.size:
        raise ValueError(
            f"labels must lie in [0, {num_classes}); found {bad.size} outside, e.g. {bad[:5].tolist()}"
        )


def _bernoulli_stats(spike_logit):
    """gamma, 1 - gamma and H(gamma) from the logits, each [B, L] float32."""
    s = spike_logit.astype(jnp.float32)
    return jax.nn.sigmoid(s), jax.nn.sigmoid(-s), _entropy_from_logit(s)


def _centroid_loss(spike_logit, labels, num_classes):
    p, p_bar, h_p = _bernoulli_stats(spike_logit)  # [B, L] each
    onehot = jax.nn.one_hot(labels, num_classes, dtype=p.dtype)  # [B, C]; zero row if invalid
    counts = jnp.sum(onehot, axis=0)  # [C]
    replicated = _explicit_replicated(onehot)
    sums = jnp.einsum("bc,bl->cl", onehot, p, out_sharding=replicated)  # [C, L]
    sums_bar = jnp.einsum("bc,bl->cl", onehot, p_bar, out_sharding=replicated)  # [C, L]
    denom = jnp.maximum(counts, 1.0)[:, None]  # [C, 1]
    mean, mean_bar = sums / denom, sums_bar / denom  # [C, L]: class means of gamma, 1 - gamma
    h_mean = -(mean * _safe_log(mean) + mean_bar * _safe_log(mean_bar))  # [C, L]
    # Gathers by one-hot matmul against finite rows (no -inf, so no 0 * -inf).
    m, m_bar, h_m = (onehot @ t for t in (mean, mean_bar, h_mean))  # [B, L] each
    per_sample = jnp.sum(_jsd(p, p_bar, h_p, m, m_bar, h_m), axis=-1)  # [B]
    weight = onehot @ (counts >= 2).astype(p.dtype)  # [B]: 1 if the class has a partner
    return jnp.sum(weight * per_sample) / jnp.maximum(jnp.sum(weight), 1.0)


def _row_block(batch: int, latent: int, max_block_elements: int) -> int:
    """Largest divisor r of batch with r * batch * latent <= max_block_elements (at least 1)."""
    limit = max(1, max_block_elements // max(1, batch * latent))
    return max(r for r in range(1, min(batch, limit) + 1) if batch % r == 0)


def _pair_terms(p_a, pb_a, h_a, p_b, pb_b, h_b):
    """JSD of each pair and the logit of its mixture, log(m) - log(1 - m) (broadcast shapes)."""
    m, m_bar = 0.5 * (p_a + p_b), 0.5 * (pb_a + pb_b)
    log_m, log_m_bar = _safe_log(m), _safe_log(m_bar)
    jsd = jnp.clip(-(m * log_m + m_bar * log_m_bar) - 0.5 * (h_a + h_b), 0.0, LOG2)
    return jsd, log_m - log_m_bar


def _spike_gradient(logit, p, p_bar, partners, mixture_logit_sum):
    """d/ds of sum over pairs of JSD, from dJSD(p, q)/dp = (logit(p) - logit((p + q) / 2)) / 2.

    With p = sigmoid(s), logit(p) = s and dp/ds = p (1 - p); summed over a sample's partners:
    p (1 - p) (partners * s - sum_partners logit(m)) / 2.
    """
    return 0.5 * p * p_bar * (partners[:, None] * logit - mixture_logit_sum)


def _all_pairs_sums(logit, cls, num_classes, max_block_elements):
    """(sum over same-class pairs a < b of sum_j JSD, its gradient [B, L]) in one pass.

    Scans over blocks of rows; each block meets every column ([r, B, L]), so memory is
    O(B * L) and the gradient needs no second pass over the pairs.
    """
    batch, latent = logit.shape
    p, p_bar, h = _bernoulli_stats(logit)  # [B, L] each, batch-sharded
    index = jnp.arange(batch)  # [B]
    r = _row_block(batch, latent, max_block_elements)
    # The row side of every comparison is seen whole; the column side stays sharded.
    rows = tuple(_replicate(t).reshape((batch // r, r) + t.shape[1:])
                 for t in (p, p_bar, h, cls, index))  # [B/r, r, L] x 3, [B/r, r] x 2
    row_sum_sharding = _explicit_replicated(p)

    def accumulate(carry, row):
        total, column_sum = carry  # [], [B, L]
        rp, rp_bar, rh, r_cls, r_index = row  # [r, L] x 3, [r] x 2
        jsd, mix_logit = _pair_terms(rp[:, None], rp_bar[:, None], rh[:, None],
                                     p[None], p_bar[None], h[None])  # [r, B, L] each
        same = (r_cls[:, None] == cls[None, :]) & (r_cls[:, None] >= 0)  # [r, B]
        w = (same & (r_index[:, None] < index[None, :])).astype(jnp.float32)  # [r, B]: a < b
        total = total + jnp.sum(w * jnp.sum(jsd, axis=-1))
        column_sum = column_sum + jnp.einsum("rb,rbl->bl", w, mix_logit)  # [B, L]
        row_sum = jnp.einsum("rb,rbl->rl", w, mix_logit, out_sharding=row_sum_sharding)  # [r, L]
        return (total, column_sum), row_sum

    (total, column_sum), row_sums = jax.lax.scan(
        accumulate, (jnp.zeros((), jnp.float32), jnp.zeros_like(p)), rows)
    onehot = jax.nn.one_hot(cls, num_classes, dtype=jnp.float32)  # [B, C]; zero row if invalid
    partners = onehot @ jnp.sum(onehot, axis=0) - (cls >= 0)  # [B]: same-class others
    grad = _spike_gradient(logit, p, p_bar, partners, row_sums.reshape(batch, latent) + column_sum)
    return total, grad


def _check_class_major(labels, num_classes: int) -> None:
    batch = labels.shape[0]
    if batch % num_classes:
        raise ValueError(f"class_major needs a batch divisible by the {num_classes} classes, got {batch}")
    try:
        host_labels = np.asarray(labels)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return  # traced: trusted (the class-balanced sampler makes this layout)
    expected = np.repeat(np.arange(num_classes), batch // num_classes)
    if not np.array_equal(host_labels, expected):
        raise ValueError("class_major expects labels [0]*m + [1]*m + ... (a class-balanced batch "
                         "in class-major order, as data.BatchSampler(balanced=True) makes)")


def _class_block_sums(logit, cls, num_classes, max_block_elements):
    """(sum over pairs a < b inside each class block of sum_j JSD, its gradient [B, L]).

    The class-major batch is viewed as [C, m, L] (m = B / C) and scanned over chunks of
    dimensions: B * m * L work instead of B * B * L, O(B * L) memory, one pass.
    """
    batch, latent = logit.shape
    m = batch // num_classes
    logit = _replicate(logit)
    p, p_bar, h = _bernoulli_stats(logit)  # [B, L] each
    chunk = max(1, min(latent, max_block_elements // max(1, num_classes * m * m)))
    pad = -latent % chunk
    # Padding with gamma = 0 (1 - gamma = 1, H = 0) adds an exact zero JSD.
    chunks = tuple(
        jnp.moveaxis(jnp.pad(t, ((0, 0), (0, pad)), constant_values=fill)
                     .reshape(num_classes, m, -1, chunk), 2, 0)
        for t, fill in zip((p, p_bar, h), (0.0, 1.0, 0.0)))  # [(L + pad) / chunk, C, m, chunk] each
    block_cls = _replicate(cls).reshape(num_classes, m)  # [C, m]
    upper = jnp.triu(jnp.ones((m, m), bool), k=1)  # [m, m]: each pair a < b once
    w = ((block_cls[:, :, None] == block_cls[:, None, :]) & (block_cls[:, :, None] >= 0)
         & upper).astype(jnp.float32)  # [C, m, m]

    def accumulate(total, part):
        cp, cp_bar, ch = part  # [C, m, chunk] each
        jsd, mix_logit = _pair_terms(cp[:, :, None], cp_bar[:, :, None], ch[:, :, None],
                                     cp[:, None], cp_bar[:, None], ch[:, None])  # [C, m, m, chunk]
        total = total + jnp.sum(w[..., None] * jsd)
        mixture_sum = (jnp.einsum("cab,cabl->cal", w, mix_logit)
                       + jnp.einsum("cab,cabl->cbl", w, mix_logit))  # [C, m, chunk]
        return total, mixture_sum

    total, sums = jax.lax.scan(accumulate, jnp.zeros((), jnp.float32), chunks)
    mixture_logit_sum = jnp.moveaxis(sums, 0, 2).reshape(batch, -1)[:, :latent]  # [B, L]
    partners = (jnp.sum(w, axis=2) + jnp.sum(w, axis=1)).reshape(batch)  # [B]
    return total, _spike_gradient(logit, p, p_bar, partners, mixture_logit_sum)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _pair_total(logit, cls, num_classes, class_major, max_block_elements):
    """Sum over same-class pairs of sum_j JSD, with the gradient computed in the same pass."""
    return _pair_total_fwd(logit, cls, num_classes, class_major, max_block_elements)[0]


def _pair_total_fwd(logit, cls, num_classes, class_major, max_block_elements):
    s = logit.astype(jnp.float32)
    if class_major:
        total, grad = _class_block_sums(s, cls, num_classes, max_block_elements)
    else:
        total, grad = _all_pairs_sums(s, cls, num_classes, max_block_elements)
    if _explicit_replicated(logit) is not None:  # the gradient is sharded like the logits
        grad = jax.sharding.reshard(grad, jax.typeof(logit).sharding)
    return total, grad.astype(logit.dtype)


def _pair_total_bwd(num_classes, class_major, max_block_elements, grad, cotangent):
    return cotangent * grad, None


_pair_total.defvjp(_pair_total_fwd, _pair_total_bwd)


def _pairwise_loss(spike_logit, labels, num_classes, class_major, max_block_elements):
    """Mean over same-class pairs a < b of sum_j JSD (within class blocks if class_major)."""
    valid = (labels >= 0) & (labels < num_classes)  # [B]
    cls = jnp.where(valid, labels, -1)  # [B]
    total = _pair_total(spike_logit, cls, num_classes, class_major, max_block_elements)
    if class_major:
        block_cls = _replicate(cls).reshape(num_classes, -1)  # [C, m]
        same = (block_cls[:, :, None] == block_cls[:, None, :]) & (block_cls[:, :, None] >= 0)
        num_pairs = jnp.sum(jnp.triu(jnp.ones(same.shape[1:], bool), k=1) & same)
    else:
        counts = jnp.sum(jax.nn.one_hot(labels, num_classes, dtype=jnp.float32), axis=0)  # [C]
        num_pairs = jnp.sum(counts * (counts - 1.0) / 2.0)
    return total / jnp.maximum(num_pairs.astype(jnp.float32), 1.0)


def class_alignment_loss(
    spike_logit: jax.Array,
    labels: jax.Array,
    num_classes: int,
    *,
    mode: str = "centroid",
    reduce_dims: str = "sum",
    class_major: bool = False,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> jax.Array:
    """Class-aware alignment loss over the global batch (see the module docstring).

    Args:
      spike_logit: spike logits, [B, L] (batch-sharded or not).
      labels: integer class labels, [B].
      num_classes: C, the number of classes.
      mode: "pairwise" (mean over same-class pairs of sum_j JSD) or "centroid" (mean JSD of
        each sample to its class's mean spike probability).
      reduce_dims: "sum" (the paper's sum_j JSD, which grows with L) or "mean" (the sum
        divided by L, so a weight keeps its meaning as L changes).
      class_major: pairwise only; the batch is class-balanced in class-major order (labels
        ``[0]*m + [1]*m + ...``, as ``data.BatchSampler(balanced=True)`` makes), so only the
        pairs inside each class's block are compared: B * B * L / C work. Checked when the
        labels are concrete; under jit, pairs across blocks are not counted.
      max_block_elements: pairwise only; the most elements of one block ([rows, B, L], or
        [C, m, m, dims] with class_major). The pairwise loss never builds a [B, B, L] array:
        it scans over blocks, so its peak extra memory is O(B * L + B * B) in the forward
        and the backward pass.

    Returns:
      A float32 scalar, >= 0 and <= L log 2 (<= log 2 with ``reduce_dims="mean"``).
    """
    _check_inputs(spike_logit, labels, num_classes, mode)
    if reduce_dims not in REDUCTIONS:
        raise ValueError(f"unknown reduce_dims {reduce_dims!r}; expected one of {REDUCTIONS}")
    if mode == "centroid":
        loss = _centroid_loss(spike_logit, labels, num_classes)
    else:
        if class_major:
            _check_class_major(labels, num_classes)
        loss = _pairwise_loss(spike_logit, labels, num_classes, class_major, max_block_elements)
    return loss / spike_logit.shape[-1] if reduce_dims == "mean" else loss
