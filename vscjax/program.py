"""The compiled program of a training configuration, built from its config and a description of
its data alone: no data read, no parameter allocated.

:class:`TrainProgram` holds what ``train.py`` runs (the K-step training call, the one-step call
and the evaluation step, each a ``jax.jit`` function) together with the shapes, dtypes and
shardings of their arguments. The trainer (``vscjax.train``) runs it on real arrays;
``vscjax.aot`` lowers and compiles the very same functions on abstract arguments for a TPU
slice this machine does not have. A program needs of its data only a :class:`DataSpec`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vscjax import feeding, resident, rng, sharding
from vscjax.models import VSC, build_model, latent_axes, three_axis_heads
from vscjax.state import TrainState, make_optimizer
from vscjax.train_step import make_multi_step, make_train_step, skip_for


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a training program needs to know of its training data.

    Attributes:
      name: the data set's name.
      image_shape: (H, W, C).
      num_classes: C.
      num_train: images in the training split (validation held out).
      pixel_levels: the number of distinct pixel values when at most 256 (the set is then held
        on the devices as uint8 codes, ``vscjax.resident``), else None (float32 pixels).
    """

    name: str
    image_shape: tuple[int, ...]
    num_classes: int
    num_train: int
    pixel_levels: int | None

    @classmethod
    def of(cls, dataset, levels: np.ndarray | None) -> DataSpec:
        """The spec of a loaded training set (``vscjax.data.Dataset``) whose pixels
        ``resident.encode_pixels`` coded with the table ``levels`` (None: not codable)."""
        return cls(dataset.name, tuple(dataset.images.shape[1:]), dataset.num_classes,
                   len(dataset.labels), None if levels is None else len(levels))


def abstract_model(config: ml_collections.ConfigDict, image_shape: Sequence[int],
                   num_classes: int, platform: str = "cpu", latent_split: bool | None = None) -> VSC:
    """``config``'s model for devices of ``platform``, with shapes and dtypes in place of its
    parameters: nothing allocated. ``latent_split``: the latent axis is split over devices
    (default: ``config.mesh.latent > 1``)."""
    return nnx.eval_shape(lambda: _build(config, image_shape, num_classes, platform, latent_split))


def _build(config: ml_collections.ConfigDict, image_shape: Sequence[int], num_classes: int,
           platform: str, latent_split: bool | None = None) -> VSC:
    split = config.mesh.latent > 1 if latent_split is None else latent_split
    return build_model(config.model, tuple(image_shape), num_classes, alpha=config.objective.alpha,
                       key=rng.key(config.seed, "init"),
                       three_axis_heads=three_axis_heads(split, platform))


class TrainProgram:
    """The jitted functions of one training configuration on one mesh, and their argument specs.

    Attributes:
      config: the run's config.
      data: the :class:`DataSpec` of its training set.
      mesh: the device mesh (every device of every process).
      platform: its devices' platform ("cpu", "gpu", "tpu"), which picks how some operations are
        written (:func:`vscjax.models.three_axis_heads`, :func:`vscjax.train_step.skip_for`,
        :func:`vscjax.resident.decode_for`).
      graphdef: the model's graph definition.
      tx: the optimizer.
      replicated: the sharding of keys, scalars and the parameters without a latent axis.
      batch_sharding: the sharding of a batch (rows split over ``"data"``).
      state_sharding: the train state's shardings (``vscjax.sharding.state_shardings``: the
        latent axis of parameters and Adam moments split over ``"latent"``).
      train_step: one step ``(state, batch, key) -> (state, metrics)``, the batch fed from the
        host (state donated).
      train_steps: the loop's call ``(state, inputs, resident_set, key) -> (state, metrics [K])``
        (``vscjax.train_step.make_multi_step``; state donated).
    """

    def __init__(self, config: ml_collections.ConfigDict, data: DataSpec, mesh: Mesh):
        self.config = config
        self.data = data
        self.mesh = mesh
        self.platform = mesh.devices.flat[0].platform
        model = abstract_model(config, data.image_shape, data.num_classes, self.platform)
        self.graphdef, self._abstract_params = nnx.split(model)
        self.latent_axes = latent_axes(model)
        self.tx = make_optimizer(config.optimizer, config.train.num_steps)
        self.replicated = sharding.replicated(mesh)
        self.batch_sharding = sharding.batch_sharding(mesh)
        self.state_sharding = sharding.state_shardings(jax.eval_shape(self._init), mesh,
                                                       self.latent_axes)
        step = make_train_step(self.graphdef, self.tx, config.objective, data.num_classes,
                               class_major=config.data.balanced, skip=skip_for(self.platform))
        outputs = (self.state_sharding, self.replicated)  # (state, metrics)
        self.train_step = jax.jit(
            step, in_shardings=(self.state_sharding, self.batch_sharding, self.replicated),
            out_shardings=outputs, donate_argnums=0)
        # The inputs arrive placed by their feed; the outputs go where the state lives.
        self.train_steps = jax.jit(make_multi_step(step, decode=resident.decode_for(self.platform)),
                                   out_shardings=outputs, donate_argnums=0)

    # ------------------------------------------------------------------------- state

    def _init(self) -> TrainState:
        model = _build(self.config, self.data.image_shape, self.data.num_classes, self.platform)
        params = nnx.state(model)
        return TrainState(params=params, opt_state=self.tx.init(params), step=jnp.int32(0),
                          nonfinite_steps=jnp.int32(0))

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the train state: a restore or compile target."""
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            jax.eval_shape(self._init), self.state_sharding)

    def initial_state(self) -> TrainState:
        """The train state at step 0, made on the devices where it lives (every process alike):
        no device ever holds more of it than its own shards."""
        return jax.jit(self._init, out_shardings=self.state_sharding)()

    def abstract_params(self):
        """Shapes and dtypes of the model's parameters (no shardings)."""
        return self._abstract_params

    def key(self) -> jax.Array:
        """The training key, made where the state is: step k's noise is ``fold_in(key, k)``."""
        return jax.jit(lambda: rng.key(self.config.seed, "train"), out_shardings=self.replicated)()

    def abstract_key(self) -> jax.ShapeDtypeStruct:
        """Shape, dtype and sharding of :meth:`key`."""
        shape = jax.eval_shape(lambda: rng.key(self.config.seed, "train"))
        return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=self.replicated)

    # ------------------------------------------------------------------------- feeding

    def feed_placement(self) -> tuple[str, int]:
        """("device", bytes per device of the resident set) or ("host", 0), as the trainer's feed
        decides for this data (``vscjax.feeding.make_feed``)."""
        d = self.data
        size = resident.device_bytes(d.num_train, d.image_shape, d.pixel_levels)
        budget = self.config.data.device_budget_mib * feeding.MIB
        if self.config.data.placement == "device" and size <= budget:
            return "device", size
        return "host", 0

    def abstract_call_inputs(self, num_steps: int):
        """(inputs, resident_set) of a K-step call, as shapes, dtypes and shardings.

        Device feeding: [K, B] int32 indices and the resident set (replicated); host feeding: K
        batches ({"image": [B, H, W, C] float32, "label": [B] int32}) and None.
        """
        d, b = self.data, self.config.train.batch_size
        if self.feed_placement()[0] == "host":
            batch = {"image": jax.ShapeDtypeStruct((b, *d.image_shape), jnp.float32,
                                                   sharding=self.batch_sharding),
                     "label": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=self.batch_sharding)}
            return [batch] * num_steps, None
        spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=self.replicated)  # noqa: E731
        images = spec((d.num_train, *d.image_shape), jnp.uint8 if d.pixel_levels else jnp.float32)
        levels = spec((d.pixel_levels,), jnp.float32) if d.pixel_levels else None
        resident_set = resident.ResidentData(images, levels, spec((d.num_train,), jnp.int32))
        rows = NamedSharding(self.mesh, PartitionSpec(None, sharding.DATA_AXIS))  # [K, B]: B split
        indices = jax.ShapeDtypeStruct((num_steps, b), jnp.int32, sharding=rows)
        return indices, resident_set

    def bytes_per_device(self) -> dict[str, int]:
        """What one device must hold at least while training, in bytes, by part: "state" (its
        shards of the parameters and Adam moments), "training set" (resident on the device, or
        0), "training batches" (its rows of the batches in flight) and "evaluation batch". The
        step's temporaries come on top."""
        d, t = self.data, self.config.train
        shards = sharding.data_size(self.mesh)
        image_bytes = int(np.prod(d.image_shape)) * 4  # float32 pixels
        placement, resident_bytes = self.feed_placement()
        in_flight = self.config.data.prefetch + 1 if placement == "host" else 1
        return {"state": leaf_bytes_per_device(self.abstract_state()),
                "training set": resident_bytes,
                "training batches": in_flight * t.batch_size // shards * image_bytes,
                "evaluation batch": t.eval_batch_size // shards * image_bytes}

    # ------------------------------------------------------------------------- evaluation

    def abstract_eval_inputs(self):
        """(params, batch_index, images, labels, c) of the evaluation step
        (``vscjax.evaluation_loop.batch_eval_terms``) for a batch of ``train.eval_batch_size``,
        abstract."""
        b, d = self.config.train.eval_batch_size, self.data
        params = self.abstract_state().params
        scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype, sharding=self.replicated)  # noqa: E731
        return (params, scalar(jnp.int32),
                jax.ShapeDtypeStruct((b, *d.image_shape), jnp.float32, sharding=self.batch_sharding),
                jax.ShapeDtypeStruct((b,), jnp.int32, sharding=self.batch_sharding),
                scalar(jnp.float32))


def leaf_bytes_per_device(tree) -> int:
    """Bytes one device holds of a pytree of ``jax.ShapeDtypeStruct`` with shardings."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += int(np.prod(shape, dtype=np.int64)) * jnp.dtype(leaf.dtype).itemsize
    return total
