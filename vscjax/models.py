"""Flax NNX models: MLP and conv encoders/decoders, likelihoods, the learned priors.

Images are ``[B, H, W, C]`` float in [0, 1]. An encoder returns the posterior heads
``(mu, logvar, spike_logit)``, each ``[B, L]`` (``spike_logit`` is None for the plain VAE);
a decoder maps a latent code ``[B, L]`` to the likelihood's parameters. Matmuls and
activations run in ``dtype`` (float32, or bfloat16 for mixed precision); parameters, heads
and every loss term stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

LIKELIHOODS = ("bernoulli", "gaussian")
ARCHITECTURES = ("mlp", "conv")
PRIORS = ("fixed", "class_mask", "pseudo_inputs", "gaussian")
CLASS_OFFSETS = ("signed", "nonnegative")


# ----------------------------------------------------------------------------- likelihoods


def bernoulli_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
    """Sigmoid cross-entropy summed over pixels: logits, x [B, ...] -> [B]."""
    logits = logits.astype(jnp.float32)
    per_pixel = jnp.maximum(logits, 0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return jnp.sum(per_pixel.reshape(x.shape[0], -1), axis=-1)


def gaussian_nll(mean: jax.Array, logvar: jax.Array, x: jax.Array) -> jax.Array:
    """Gaussian negative log-likelihood summed over pixels: [B, ...] -> [B]."""
    mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
    per_pixel = 0.5 * (math.log(2 * math.pi) + logvar + jnp.square(x - mean) * jnp.exp(-logvar))
    return jnp.sum(per_pixel.reshape(x.shape[0], -1), axis=-1)


def likelihood_outputs(likelihood: str) -> int:
    """Decoder outputs per pixel: 1 (Bernoulli logits) or 2 (Gaussian mean, log-variance)."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")
    return 1 if likelihood == "bernoulli" else 2


class LatentHeads(nnx.Module):
    """``num_heads`` linear maps to the latent space in one matmul: [B, in] -> [B, num_heads, L].

    The kernel is [in, num_heads, L] and the bias [num_heads, L], so the latent axis is an axis
    of its own that a device mesh can split (``vscjax.sharding``): each device then holds its
    slice of every head. Initialised as one ``nnx.Linear(in, num_heads * L)`` (the same draws,
    reshaped), which is also the layout of checkpoints written before the heads had their own
    latent axis.

    ``three_axis``: the product contracts the three-axis kernel as it is (needed when the latent
    axis is split over devices; :func:`three_axis_heads` chooses); otherwise it is the plain
    matrix product with the kernel seen as [in, num_heads * L] (the same memory, no copy), which
    XLA's CPU backend runs without the transposes it makes of a three-axis kernel, and which is
    ``nnx.Linear``'s computation bit for bit.
    """

    def __init__(self, in_features: int, num_heads: int, latent_dim: int, *, dtype=jnp.float32,
                 three_axis: bool = False, rngs: nnx.Rngs):
        kernel_key = rngs.params()
        kernel = nnx.initializers.lecun_normal()(kernel_key, (in_features, num_heads * latent_dim))
        self.kernel = nnx.Param(kernel.reshape(in_features, num_heads, latent_dim))
        bias_key = rngs.params()  # drawn, as nnx.Linear draws it, though zeros use no randomness
        del bias_key
        self.bias = nnx.Param(jnp.zeros((num_heads, latent_dim), jnp.float32))
        self.dtype = dtype
        self.three_axis = three_axis

    def __call__(self, h: jax.Array) -> jax.Array:
        kernel, bias = self.kernel[...].astype(self.dtype), self.bias[...].astype(self.dtype)
        h = h.astype(self.dtype)
        if self.three_axis:
            out = jax.lax.dot_general(h, kernel, (((1,), (0,)), ((), ())))  # [B, num_heads, L]
        else:
            flat = h @ kernel.reshape(kernel.shape[0], -1) + bias.reshape(-1)  # [B, num_heads * L]
            return flat.astype(jnp.float32).reshape(h.shape[0], *kernel.shape[1:])
        return (out + bias).astype(jnp.float32)  # [B, num_heads, L]


# ----------------------------------------------------------------------------- MLP


class MLPEncoder(nnx.Module):
    """Flattened image -> hidden ReLU layers -> ``num_heads`` linear heads of size L."""

    def __init__(self, in_features: int, hidden: Sequence[int], latent_dim: int, num_heads: int,
                 *, dtype=jnp.float32, three_axis: bool = False, rngs: nnx.Rngs):
        sizes = [in_features, *hidden]
        self.layers = nnx.List([
            nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])
        ])
        self.heads = LatentHeads(sizes[-1], num_heads, latent_dim, dtype=dtype,
                                 three_axis=three_axis, rngs=rngs)
        self.num_heads = num_heads

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        h = x.reshape(x.shape[0], -1)  # [B, D]
        for layer in self.layers:
            h = jax.nn.relu(layer(h))
        heads = self.heads(h)  # [B, num_heads, L]
        return [heads[:, k] for k in range(self.num_heads)]  # [B, L] each


class MLPDecoder(nnx.Module):
    """Latent code -> hidden ReLU layers -> ``outputs_per_pixel`` maps of the image's shape."""

    def __init__(self, latent_dim: int, hidden: Sequence[int], image_shape: Sequence[int],
                 outputs_per_pixel: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        sizes = [latent_dim, *hidden]
        self.layers = nnx.List([
            nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])
        ])
        self.out = nnx.Linear(sizes[-1], outputs_per_pixel * math.prod(image_shape), dtype=dtype, rngs=rngs)
        self.image_shape = tuple(image_shape)
        self.outputs_per_pixel = outputs_per_pixel

    def __call__(self, z: jax.Array) -> list[jax.Array]:
        h = z
        for layer in self.layers:
            h = jax.nn.relu(layer(h))
        out = self.out(h).astype(jnp.float32)  # [B, k * D]
        return [o.reshape((z.shape[0], *self.image_shape))
                for o in jnp.split(out, self.outputs_per_pixel, axis=-1)]  # [B, H, W, C] each


# ----------------------------------------------------------------------------- conv


def _conv_depth(image_shape: Sequence[int]) -> int:
    height, width = image_shape[0], image_shape[1]
    if height != width or height not in (32, 64):
        raise ValueError(f"the conv architecture takes 32x32 or 64x64 images, got {tuple(image_shape)}")
    return int(math.log2(height)) - 2  # down to 4x4


class ConvEncoder(nnx.Module):
    """Stride-2 4x4 convolutions down to 4x4, then linear heads (32x32 or 64x64 images)."""

    def __init__(self, image_shape: Sequence[int], channels: int, latent_dim: int, num_heads: int,
                 *, dtype=jnp.float32, three_axis: bool = False, rngs: nnx.Rngs):
        depth = _conv_depth(image_shape)
        widths = [image_shape[2]] + [channels * 2**i for i in range(depth)]
        self.convs = nnx.List([
            nnx.Conv(a, b, (4, 4), strides=2, padding="SAME", dtype=dtype, rngs=rngs)
            for a, b in zip(widths[:-1], widths[1:])
        ])
        self.heads = LatentHeads(16 * widths[-1], num_heads, latent_dim, dtype=dtype,
                                 three_axis=three_axis, rngs=rngs)
        self.num_heads = num_heads

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        h = x  # [B, H, W, C]
        for conv in self.convs:
            h = jax.nn.relu(conv(h))  # halves H and W
        h = h.reshape(h.shape[0], -1)  # [B, 4 * 4 * C']
        heads = self.heads(h)  # [B, num_heads, L]
        return [heads[:, k] for k in range(self.num_heads)]  # [B, L] each


class ConvDecoder(nnx.Module):
    """Linear to 4x4 maps, then stride-2 transposed convolutions up to the image size."""

    def __init__(self, latent_dim: int, image_shape: Sequence[int], channels: int,
                 outputs_per_pixel: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        depth = _conv_depth(image_shape)
        widths = [channels * 2**i for i in reversed(range(depth))]
        self.start_width = widths[0]
        self.inp = nnx.Linear(latent_dim, 16 * widths[0], dtype=dtype, rngs=rngs)
        self.deconvs = nnx.List([
            nnx.ConvTranspose(a, b, (4, 4), strides=2, padding="SAME", dtype=dtype, rngs=rngs)
            for a, b in zip(widths[:-1], widths[1:])
        ])
        out_channels = outputs_per_pixel * image_shape[2]
        self.out = nnx.ConvTranspose(widths[-1], out_channels, (4, 4), strides=2, padding="SAME",
                                     dtype=dtype, rngs=rngs)
        self.outputs_per_pixel = outputs_per_pixel

    def __call__(self, z: jax.Array) -> list[jax.Array]:
        h = jax.nn.relu(self.inp(z)).reshape(z.shape[0], 4, 4, self.start_width)
        for deconv in self.deconvs:
            h = jax.nn.relu(deconv(h))  # doubles H and W
        out = self.out(h).astype(jnp.float32)  # [B, H, W, k * C]
        return jnp.split(out, self.outputs_per_pixel, axis=-1)  # [B, H, W, C] each


# ----------------------------------------------------------------------------- pseudo-input prior


class PseudoInputPrior(nnx.Module):
    """Learned spike-and-slab prior from K pseudo-inputs (UAI-version VSC, authors' code).

    The pseudo-inputs ``u_k`` pass through the model's encoder to give the prior components;
    their spike probabilities are sharpened, ``sigmoid(nu (gamma_k - 1/2))``. A selector
    ``w_i = normalise(sigmoid(W x_i + b))`` weights the components for each input.
    """

    def __init__(self, image_shape: Sequence[int], num_components: int, sharpness: float,
                 *, rngs: nnx.Rngs):
        shape = (num_components, *image_shape)
        self.pseudo_inputs = nnx.Param(0.5 + 0.05 * jax.random.normal(rngs.params(), shape))
        self.selector = nnx.Linear(math.prod(image_shape), num_components, rngs=rngs)
        self.sharpness = sharpness

    def components(self, encoder) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Prior parameters (mu_k, logvar_k, sharpened spike logit_k), each [K, L]."""
        mu, logvar, spike_logit = encoder(self.pseudo_inputs[...])
        # sigmoid(nu (gamma - 1/2)) has logit nu (gamma - 1/2).
        return mu, logvar, self.sharpness * (jax.nn.sigmoid(spike_logit) - 0.5)

    def weights(self, x: jax.Array) -> jax.Array:
        """Normalised selector weights w [B, K] (rows sum to 1)."""
        a = self.selector(x.reshape(x.shape[0], -1).astype(jnp.float32))  # [B, K]
        # sigmoid(a) / sum_k sigmoid(a_k), normalised in log space: no 0 / 0 when all underflow.
        return jax.nn.softmax(jax.nn.log_sigmoid(a), axis=-1)


# ----------------------------------------------------------------------------- class-mask prior


class ClassMaskPrior(nnx.Module):
    """Learned class-conditional spike prior: one row of spike logits per class.

    ``logits[c, j] = shared[j] + h[c, j]``: ``shared`` [L] holds what every class has in common,
    the class offsets ``h`` [C, L] what is specific to class c. ``offsets="signed"``: ``h`` is the
    parameter ``offset`` itself, so the rows are free (a penalty on ``h`` in the loss keeps them
    near the shared row). ``offsets="nonnegative"``: ``h = softplus(offset)``, so a class can only
    raise a dimension above its shared level: a dimension every class uses must live in
    ``shared`` (a global factor), and the others are raised by the classes that own them. The
    slab prior stays N(0, 1). Initialised at (about) ``logit(alpha)`` for every class, i.e. the
    fixed prior. The encoder never sees the label: a training sample's spike KL is taken to its
    class's row, and the generative model is the mixture ``p(z) = sum_c p(c) p(z | c)`` with
    ``p(c) = 1 / C``.
    """

    NONNEGATIVE_START = -6.0  # softplus(-6) = 0.0025: nonnegative offsets start near 0

    def __init__(self, num_classes: int, latent_dim: int, alpha: float, offsets: str = "signed"):
        if num_classes < 1:
            raise ValueError(f"the class-mask prior needs at least one class, got {num_classes}")
        if offsets not in CLASS_OFFSETS:
            raise ValueError(f"unknown class offsets {offsets!r}; expected one of {CLASS_OFFSETS}")
        self.nonnegative = offsets == "nonnegative"
        start = self.NONNEGATIVE_START if self.nonnegative else 0.0
        self.shared = nnx.Param(jnp.full((latent_dim,), math.log(alpha) - math.log1p(-alpha), jnp.float32))
        self.offset = nnx.Param(jnp.full((num_classes, latent_dim), start, jnp.float32))

    @property
    def num_classes(self) -> int:
        return self.offset.shape[0]

    def offsets(self) -> jax.Array:
        """The class offsets h added to the shared logits, [C, L]."""
        return jax.nn.softplus(self.offset[...]) if self.nonnegative else self.offset[...]

    def logits(self) -> jax.Array:
        """Spike logits of every class, [C, L]."""
        return self.shared[...][None, :] + self.offsets()

    def masks(self) -> jax.Array:
        """The learned class masks: prior spike probabilities sigmoid(logits), [C, L]."""
        return jax.nn.sigmoid(self.logits())


# ----------------------------------------------------------------------------- the model


class VSC(nnx.Module):
    """Variational sparse coding model (or a plain VAE when ``prior == "gaussian"``).

    Args:
      image_shape: (H, W, C) of the inputs.
      latent_dim: L.
      architecture: "mlp" (hidden sizes ``hidden``) or "conv" (base width ``conv_channels``).
      likelihood: "bernoulli" (pixels in [0, 1]) or "gaussian" (learned per-pixel variance).
      prior: "fixed" (spike-and-slab with spike probability alpha), "class_mask" (learned
        spike logits per class, :class:`ClassMaskPrior`), "pseudo_inputs" (learned prior with
        ``num_pseudo_inputs`` components) or "gaussian" (a plain VAE: no spikes).
      num_classes: C, needed by the class-mask prior.
      class_offsets: "signed" or "nonnegative" class offsets of the class-mask prior.
      alpha: prior spike probability; the class-mask prior starts there.
      dtype: compute dtype of matmuls and activations ("float32" or "bfloat16").
      three_axis_heads: the encoder heads contract their [in, 3, L] kernel as three axes
        (:class:`LatentHeads`, :func:`three_axis_heads`); the parameters are the same either way.
    """

    def __init__(self, image_shape: Sequence[int], latent_dim: int, *, architecture: str = "mlp",
                 hidden: Sequence[int] = (400,), conv_channels: int = 32,
                 likelihood: str = "bernoulli", prior: str = "fixed", num_pseudo_inputs: int = 10,
                 pseudo_sharpness: float = 10.0, num_classes: int = 0, alpha: float = 0.01,
                 class_offsets: str = "signed", dtype: str = "float32", three_axis_heads: bool = False,
                 rngs: nnx.Rngs):
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; expected one of {PRIORS}")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
        compute = jnp.dtype(dtype)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.prior_kind = prior
        num_heads = 2 if prior == "gaussian" else 3
        k = likelihood_outputs(likelihood)
        if architecture == "mlp":
            self.encoder = MLPEncoder(math.prod(image_shape), hidden, latent_dim, num_heads,
                                      dtype=compute, three_axis=three_axis_heads, rngs=rngs)
            self.decoder = MLPDecoder(latent_dim, tuple(reversed(hidden)), image_shape, k,
                                      dtype=compute, rngs=rngs)
        else:
            self.encoder = ConvEncoder(image_shape, conv_channels, latent_dim, num_heads,
                                       dtype=compute, three_axis=three_axis_heads, rngs=rngs)
            self.decoder = ConvDecoder(latent_dim, image_shape, conv_channels, k, dtype=compute, rngs=rngs)
        if prior == "pseudo_inputs":
            self.prior = PseudoInputPrior(image_shape, num_pseudo_inputs, pseudo_sharpness, rngs=rngs)
        elif prior == "class_mask":
            self.prior = ClassMaskPrior(num_classes, latent_dim, alpha, class_offsets)
        else:
            self.prior = None

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """Posterior heads (mu, logvar, spike_logit), each [B, L]; spike_logit None for a VAE."""
        if x.shape[1:] != self.image_shape:
            raise ValueError(f"the model takes images of shape {self.image_shape}, got {tuple(x.shape[1:])}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"the model takes float images in [0, 1], got dtype {x.dtype}")
        heads = self.encoder(x)
        return (heads[0], heads[1], heads[2] if len(heads) == 3 else None)

    def decode(self, z: jax.Array) -> list[jax.Array]:
        """Likelihood parameters for a latent code z [B, L]: [logits] or [mean, logvar]."""
        return self.decoder(z)

    def reconstruction_nll(self, z: jax.Array, x: jax.Array) -> jax.Array:
        """-log p(x | z) summed over pixels, [B]."""
        out = self.decode(z)
        return bernoulli_nll(out[0], x) if self.likelihood == "bernoulli" else gaussian_nll(*out, x)

    def mean_image(self, z: jax.Array) -> jax.Array:
        """The decoder's mean image for z, [B, H, W, C]."""
        out = self.decode(z)
        return jax.nn.sigmoid(out[0]) if self.likelihood == "bernoulli" else out[0]


def three_axis_heads(latent_split: bool, platform: str) -> bool:
    """Whether the encoder heads contract their [in, 3, L] kernel as three axes
    (:class:`LatentHeads`): where the latent axis is split over devices (it must stay an axis of
    its own), and on TPU, where the compiler fuses the three-axis product with its neighbours
    (fewer bytes a step by its cost model); elsewhere the plain matrix product, which XLA's CPU
    backend runs without transposing the kernel.

    Args:
      latent_split: the latent axis is split over devices (``config.mesh.latent > 1``).
      platform: the devices' platform ("cpu", "gpu", "tpu").
    """
    return latent_split or platform == "tpu"


def build_model(model_config, image_shape: Sequence[int], num_classes: int, *, alpha: float,
                key: jax.Array, three_axis_heads: bool = False) -> VSC:
    """A VSC model from the ``config.model`` block, the data's image shape and class count.

    ``key`` seeds the initial parameters (a run passes its "init" stream, :mod:`vscjax.rng`);
    ``three_axis_heads``: how the encoder heads contract (:func:`three_axis_heads`).
    """
    return VSC(
        image_shape,
        model_config.latent_dim,
        architecture=model_config.architecture,
        hidden=tuple(model_config.hidden),
        conv_channels=model_config.conv_channels,
        likelihood=model_config.likelihood,
        prior=model_config.prior,
        num_pseudo_inputs=model_config.num_pseudo_inputs,
        pseudo_sharpness=model_config.pseudo_sharpness,
        num_classes=num_classes,
        alpha=alpha,
        class_offsets=model_config.class_offsets,
        dtype=model_config.dtype,
        three_axis_heads=three_axis_heads,
        rngs=nnx.Rngs(params=key),
    )


def latent_axes(model: VSC) -> dict[tuple, int]:
    """The parameters that carry the latent axis L, and which of their axes it is.

    Returns:
      {parameter path (module names and list indices, as in ``nnx.state(model)``): axis}: the
      encoder heads' kernel [in, heads, L] and bias [heads, L], the decoder's first layer's
      kernel [L, out], and the class-mask prior's shared logits [L] and offsets [C, L].
      Everything else (hidden layers, pseudo-inputs, the selector) has no latent axis.
    """
    axes = {("encoder", "heads", "kernel"): 2, ("encoder", "heads", "bias"): 1}
    decoder = model.decoder
    if isinstance(decoder, ConvDecoder):
        axes[("decoder", "inp", "kernel")] = 0
    elif len(decoder.layers):
        axes[("decoder", "layers", 0, "kernel")] = 0
    else:
        axes[("decoder", "out", "kernel")] = 0
    if model.prior_kind == "class_mask":
        axes[("prior", "shared")] = 0
        axes[("prior", "offset")] = 1
    return axes
