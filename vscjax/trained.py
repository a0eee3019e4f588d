"""Trained models from Python: ``vscjax.load(workdir)`` and what it returns.

    import jax, vscjax
    model = vscjax.load("workdir/mnist")
    codes = model.encode(images)           # mu, logvar, gamma: [N, L] each
    images = model.sample(16, jax.random.key(0), label=3)

:func:`load` reads a train.py workdir: ``config.json``, ``dataset.json`` (the image shape and
the number of classes, written by the trainer) and the parameters of the newest restorable
checkpoint, alone (the optimizer state is not read), through :func:`restore_model`, the one way
every reader of a workdir restores its model. :class:`TrainedModel` runs the model in jitted,
fixed-size batches on this process's default device (``evaluation_loop.map_batches`` without a
mesh: one compilation per batch shape, no collective) and returns numpy arrays.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vscjax import checkpoints, evaluation_loop, program, sharding
from vscjax.bounds import prior_mixture
from vscjax.codes import Codes, encode_images
from vscjax.models import VSC, latent_axes
from vscjax.workdir import read_config, read_dataset_info

BATCH_SIZE = 1000  # images per jitted call


class RestoredModel(NamedTuple):
    """A workdir's model as :func:`restore_model` reads it."""

    config: ml_collections.ConfigDict  # the run's config
    graphdef: nnx.GraphDef  # the model's structure
    params: nnx.State  # its parameters
    step: int  # the training step of the parameters


def restore_model(workdir: str, image_shape: Sequence[int], num_classes: int, *,
                  mesh: jax.sharding.Mesh | None = None) -> RestoredModel:
    """The model of a train.py workdir: its config and the parameters of its newest restorable
    checkpoint, read alone (orbax's partial restore; the optimizer state is never read).

    Every reader of a workdir's parameters comes through here: :func:`load`, the end-of-run
    pictures and ``vscjax.evaluate``. With several processes every process must call it (the
    checkpoint restored is agreed collectively: ``checkpoints.load_params``).

    Args:
      workdir: the training run's folder.
      image_shape: (H, W, C) of the data the model was built for.
      num_classes: the data's class count.
      mesh: the mesh the parameters are placed on, their latent axis split over its
        ``"latent"`` axis as in training (``vscjax.sharding.state_shardings``); default: whole,
        on this process's first device.

    Raises:
      FileNotFoundError: the workdir has no config or no restorable checkpoint.
      checkpoints.CheckpointMismatchError: the newest readable checkpoint holds other parameters.
    """
    config = read_config(workdir)
    split = mesh is not None and dict(mesh.shape).get(sharding.LATENT_AXIS, 1) > 1
    platform = (jax.devices() if mesh is None else mesh.devices.flat)[0].platform
    abstract_model = program.abstract_model(config, image_shape, num_classes, platform,
                                            latent_split=split)
    graphdef, abstract_params = nnx.split(abstract_model)
    placement = (None if mesh is None else
                 sharding.state_shardings(abstract_params, mesh, latent_axes(abstract_model)))
    params, step = checkpoints.load_params(workdir, abstract_params, sharding=placement)
    return RestoredModel(config, graphdef, params, step)


def load(workdir: str, *, image_shape: Sequence[int] | None = None, num_classes: int | None = None,
         batch_size: int = BATCH_SIZE) -> TrainedModel:
    """The trained model of a train.py workdir (its newest restorable checkpoint).

    Args:
      workdir: the training run's folder.
      image_shape: (H, W, C) of the data; default: from ``dataset.json``. Workdirs made before
        the trainer wrote that file need it and ``num_classes``.
      num_classes: the data's class count; default: from ``dataset.json``.
      batch_size: images (or codes) per jitted call.

    Returns:
      A :class:`TrainedModel` holding the parameters on the default device.

    Raises:
      FileNotFoundError: the workdir has no config, no dataset info, or no restorable checkpoint.
      ValueError: ``batch_size``, ``image_shape`` or ``num_classes`` is not what it must be, or
        a file of the workdir is not (``workdir.WorkdirFileError``, ``config.ConfigError``).
    """
    _check_count("batch_size", batch_size)
    if image_shape is not None and not (len(image_shape) == 3 and all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in image_shape)):
        raise ValueError(f"image_shape must be three positive integers (H, W, C), got {image_shape!r}")
    if num_classes is not None:
        _check_count("num_classes", num_classes)
    if image_shape is None or num_classes is None:
        info = read_dataset_info(workdir)
        image_shape = info["image_shape"] if image_shape is None else image_shape
        num_classes = info["num_classes"] if num_classes is None else num_classes
    restored = restore_model(workdir, image_shape, num_classes)
    return TrainedModel(nnx.merge(restored.graphdef, restored.params), restored.config,
                        num_classes=num_classes, step=restored.step, batch_size=batch_size)


class TrainedModel:
    """A trained VSC model (or plain VAE): encode, decode, reconstruct, sample from the prior.

    Every method takes and returns numpy (or JAX) arrays and runs the model in jitted batches
    of ``batch_size``.

    Attributes:
      config: the run's config.
      image_shape: (H, W, C) of the images.
      latent_dim: L.
      num_classes: C of the training data.
      prior: the prior's kind: "fixed", "class_mask", "pseudo_inputs" or "gaussian" (a VAE).
      step: the training step of the parameters.
    """

    def __init__(self, model: VSC, config: ml_collections.ConfigDict, *, num_classes: int,
                 step: int = 0, batch_size: int = BATCH_SIZE):
        self.graphdef, self.params = nnx.split(model)
        self.config = config
        self.image_shape = model.image_shape
        self.latent_dim = model.latent_dim
        self.num_classes = num_classes
        self.prior = model.prior_kind
        self.step = step
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return (f"TrainedModel(prior={self.prior!r}, latent_dim={self.latent_dim}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes}, step={self.step})")

    @property
    def model(self) -> VSC:
        """The NNX model (a new one holding these parameters)."""
        return nnx.merge(self.graphdef, self.params)

    @property
    def class_masks(self) -> np.ndarray | None:
        """The learned class masks, prior spike probabilities [C, L] (class-mask prior; else None)."""
        if self.prior != "class_mask":
            return None
        return np.asarray(self.model.prior.masks())

    def encode(self, images) -> Codes:
        """Posterior heads of images [N, H, W, C] (float, values in [0, 1]).

        Returns:
          Codes with mu, logvar and gamma (spike probabilities; ones for a plain VAE), [N, L]
          each, and ``mean_code`` (mu where gamma > 0.5, else 0).

        Raises:
          ValueError: the images are not [N >= 1, H, W, C] of the model's shape, or hold a
            value that is not finite or lies outside [0, 1], the range the model was trained on
            (every data source scales pixels into it: divide 8-bit images by 255).
        """
        images = _real_array("images", images, (None, *self.image_shape))
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"images must hold values in [0, 1], the range the model was trained "
                             f"on; these span [{low:g}, {high:g}]"
                             + (" (divide 8-bit images by 255)" if high > 1.0 else ""))
        return encode_images(self.graphdef, self.params, images, self.batch_size)

    def decode(self, z) -> np.ndarray:
        """The decoder's mean images of latent codes z [N, L]: [N, H, W, C].

        Raises:
          ValueError: z is not [N >= 1, L] or holds a value that is not finite.
        """
        z = _real_array("codes", z, (None, self.latent_dim))
        return evaluation_loop.map_batches(functools.partial(_batch_mean_image, graphdef=self.graphdef),
                                           self.params, (z,), batch_size=self.batch_size)

    def reconstruct(self, images) -> np.ndarray:
        """Images [N, H, W, C] decoded from their posterior mean codes (spike on where
        gamma > 0.5, slab at its mean): [N, H, W, C]."""
        return self.decode(self.encode(images).mean_code)

    def sample_latents(self, n: int, key: jax.Array, *, label: int | None = None) -> np.ndarray:
        """n codes [n, L] drawn from the model's generative prior (see :meth:`sample`).

        Raises:
          ValueError: n is not a positive integer, key is not one JAX random key, or label is
            not None or an integer class of the class-mask prior.
        """
        _check_count("n", n)
        if not (isinstance(key, jax.Array) and (
                (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ())
                or (key.dtype == jnp.uint32 and key.shape == (2,)))):
            raise ValueError(f"key must be one JAX random key (jax.random.key(0)), got {key!r:.80}")
        if label is not None:
            if self.prior != "class_mask":
                raise ValueError(f"the {self.prior} prior has no classes; sample with label=None")
            if (isinstance(label, bool) or not isinstance(label, numbers.Integral)
                    or not 0 <= label < self.num_classes):
                raise ValueError(f"label must be an integer class in [0, {self.num_classes}), "
                                 f"got {label!r}")
            label = jnp.full(n, int(label), jnp.int32)
        return np.asarray(_prior_latents(self.graphdef, float(self.config.objective.alpha),
                                         n, self.params, key, label))

    def sample(self, n: int, key: jax.Array, *, label: int | None = None) -> np.ndarray:
        """n images [n, H, W, C] from the model's generative prior: decoded prior codes.

        The fixed prior: each dimension on with probability alpha, N(0, 1) when on. The
        class-mask prior: the class ``label``'s spike probabilities with an N(0, 1) slab;
        ``label=None`` draws each sample's class uniformly. The pseudo-input prior: a uniform
        mixture of its components (no labels). A plain VAE: N(0, I).

        Args:
          n: number of samples.
          key: a JAX random key.
          label: the class to sample (class-mask prior only), or None.
        """
        return self.decode(self.sample_latents(n, key, label=label))


def _check_count(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _real_array(name: str, values, shape: tuple) -> np.ndarray:
    """``values`` as a float32 array of ``shape`` (None: any number >= 1 of rows), every value
    finite; else ``ValueError`` naming ``name`` and what is wrong."""
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) \
            or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got an array of {array.dtype}")
    wanted = "[" + ", ".join("N" if n is None else str(n) for n in shape) + "]"
    if array.ndim != len(shape) or any(n is not None and a != n for a, n in zip(array.shape, shape)):
        raise ValueError(f"{name} must be {wanted}, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one row, got shape {array.shape}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} hold {np.size(array) - np.isfinite(array).sum()} values that are "
                         "not finite (NaN or infinite)")
    return array


@functools.partial(jax.jit, static_argnames="graphdef")
def _batch_mean_image(params, batch_index, z, *, graphdef):
    """Mean images [B, H, W, C] of codes z [B, L]."""
    del batch_index  # decoding draws no noise
    return nnx.merge(graphdef, params).mean_image(z)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _prior_latents(graphdef, alpha: float, n: int, params, key, labels):
    """n codes [n, L] from the prior of the model (graphdef, params); ``labels`` [n] int32
    picks each sample's mixture component, None draws them from the mixture's weights."""
    model = nnx.merge(graphdef, params)
    component_key, spike_key, slab_key = jax.random.split(key, 3)
    shape = (n, model.latent_dim)
    if model.prior_kind == "gaussian":  # plain VAE: N(0, I)
        return jax.random.normal(slab_key, shape)
    prior = prior_mixture(model, alpha)
    num_components = prior.log_weights.shape[0]
    if labels is None:
        labels = jax.random.categorical(component_key, prior.log_weights, shape=(n,))  # [n]
    pick = lambda values: jnp.broadcast_to(values, (num_components, shape[1]))[labels]  # noqa: E731  [n, L]
    on = jax.random.uniform(spike_key, shape) < jax.nn.sigmoid(pick(prior.spike_logit))
    slab = pick(prior.mu) + jnp.exp(0.5 * pick(prior.logvar)) * jax.random.normal(slab_key, shape)
    return jnp.where(on, slab, 0.0)
