"""Data sources and batching: scikit-learn's digits, IDX files, TFDS, synthetic shapes, the
user's own files (an .npz, or a folder of images per class: :mod:`vscjax.image_files`); a
resumable sampler.

IDX data sets that :mod:`vscjax.download` knows (MNIST, Fashion-MNIST) are downloaded on
first use into their folder (:func:`resolve_data_dir`). The user's own files have a test split
of their own (an .npz's ``images_test`` and ``labels_test``), or else a fixed, seeded fifth of
their images is held out as the test split (``TEST_FRACTION``, ``TEST_SEED``).

Every source returns a :class:`Dataset` of float32 images in [0, 1], shape [N, H, W, C],
and int32 labels; the synthetic shapes (:mod:`vscjax.shapes`) also each image's factors.
:func:`load` gives three splits of every source: ``"test"`` (the source's own test set),
``"validation"`` (a fixed part of the source's training set, 1/12 of it: 5,000 of MNIST's
60,000 images, the same for every run and seed) and ``"train"`` (the rest).
Hyperparameters are chosen on validation; the test set is for reports only.
:class:`BatchSampler` gives the indices of each batch as a pure function of (seed, step), so a
resumed run needs only its step to see the same batches, and can draw class-balanced batches
for the class-aware alignment loss. :func:`batch_iterator` gathers batches and puts them on the
device(s) in a background thread.

This module knows nothing of models; scikit-learn and tensorflow_datasets are imported
only when their sources are used.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import queue
import struct
import threading
from collections.abc import Iterator

import jax
import numpy as np

from vscjax import download, image_files, rng, shapes
from vscjax.sharding import global_batch, process_rows

SPLITS = ("train", "validation", "test")
VALIDATION_FRACTION = 1 / 12  # of the source's training set: 5,000 of MNIST's 60,000 images
VALIDATION_SEED = 20_191_205  # fixed, so the held-out images never depend on a run's seed
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed, so the digits test set never depends on a run's seed
TEST_FRACTION = 0.2  # of the user's own images, held out as the test split when they have none
TEST_SEED = 20_190_722  # fixed, so the held-out test images never depend on a run's seed
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IDX_PREFIX = {"train": "train", "test": "t10k"}
OWN_FILES = {"npz": "an .npz file", "folder": "a folder of class folders"}  # source -> data.dir
SOURCES = ("digits", "idx", "tfds", "shapes", *OWN_FILES)
DATA_DIR_ENV = "VSCJAX_DATA_DIR"
TFDS_INSTALL = 'pip install "vscjax[tfds]"'


class DataError(ValueError):
    """A data set cannot be found, read or batched as asked; the message says which and why."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification data set held in host memory.

    Attributes:
      images: [N, H, W, C] float32, values in [0, 1].
      labels: [N] int32, values in [0, num_classes).
      num_classes: number of classes.
      name: a name for logs and reports.
      factors: [N, K] float64 values of the factors that made each image, NaN where an
        image's class lacks the factor (the synthetic shapes); None for other sources.
      factor_names: the K factors' names; None when ``factors`` is.
    """

    images: np.ndarray  # [N, H, W, C]
    labels: np.ndarray  # [N]
    num_classes: int
    name: str
    factors: np.ndarray | None = None  # [N, K] generative factors, NaN where absent; None: unknown
    factor_names: tuple[str, ...] | None = None  # [K], with factors

    def __post_init__(self):
        if self.images.ndim != 4:
            raise DataError(f"{self.name}: images must be [N, H, W, C], got shape {self.images.shape}")
        if self.images.dtype != np.float32:
            raise DataError(f"{self.name}: images must be float32, got {self.images.dtype}")
        if self.labels.ndim != 1 or self.labels.dtype != np.int32:
            raise DataError(
                f"{self.name}: labels must be a 1-D int32 array, got {self.labels.dtype} "
                f"of shape {self.labels.shape}"
            )
        if len(self.images) != len(self.labels):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise DataError(
                f"{self.name}: labels span [{self.labels.min()}, {self.labels.max()}], "
                f"outside [0, {self.num_classes})"
            )
        if (self.factors is None) != (self.factor_names is None):
            raise DataError(f"{self.name}: factors and factor_names come together or not at all")
        if self.factors is not None and self.factors.shape != (len(self.labels), len(self.factor_names)):
            raise DataError(
                f"{self.name}: factors must be [{len(self.labels)}, {len(self.factor_names)}] "
                f"(images, factor names), got shape {self.factors.shape}"
            )


def _check_split(split: str, valid) -> None:
    if split not in valid:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(valid)}")


def load_digits(split: str, *, test_fraction: float = DIGITS_TEST_FRACTION,
                seed: int = DIGITS_SPLIT_SEED) -> Dataset:
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, no download needed.

    Values 0..16 are scaled to [0, 1]. The train/test split is stratified by class and
    deterministic given ``seed`` (:func:`load` always uses the fixed ``DIGITS_SPLIT_SEED``).

    Args:
      split: "train" or "test".
      test_fraction: fraction of the images in the test split, in (0, 1).
      seed: seed of the split.

    Returns:
      A Dataset of shape [N, 8, 8, 1] with 10 classes.
    """
    _check_split(split, ("train", "test"))
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    train_idx, test_idx = train_test_split(
        np.arange(len(digits.target)),
        test_size=test_fraction,
        random_state=seed,
        stratify=digits.target,
    )
    idx = train_idx if split == "train" else test_idx
    images = (digits.images[idx] / 16.0).astype(np.float32)[..., None]  # [N, 8, 8, 1]
    return Dataset(images, digits.target[idx].astype(np.int32), 10, f"digits/{split}")


def _find_idx_file(directory: str, stem: str) -> str:
    candidates = [os.path.join(directory, stem + ".gz"), os.path.join(directory, stem)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise DataError(f"IDX file not found; looked for {' and '.join(candidates)}")


def _read_idx(path: str, magic: int, num_dims: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzip or not), shape read from its big-endian header."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    header_size = 4 * (1 + num_dims)
    if len(data) < header_size:
        raise DataError(f"{path}: truncated header ({len(data)} bytes, expected {header_size})")
    got_magic, *shape = struct.unpack(f">{1 + num_dims}I", data[:header_size])
    if got_magic != magic:
        raise DataError(f"{path}: wrong magic number, expected {magic}, got {got_magic}")
    size = int(np.prod(shape))
    if len(data) - header_size < size:
        raise DataError(
            f"{path}: truncated, header says {size} bytes of data for shape {tuple(shape)}, "
            f"file has {len(data) - header_size}"
        )
    return np.frombuffer(data, np.uint8, size, header_size).reshape(shape)


def load_idx(directory: str, split: str, *, num_classes: int | None = None) -> Dataset:
    """MNIST-style IDX files (as distributed: MNIST, Fashion-MNIST, KMNIST, ...).

    Reads ``{train,t10k}-images-idx3-ubyte`` and ``{train,t10k}-labels-idx1-ubyte`` from
    ``directory``, gzip-compressed (``.gz``, preferred when both exist) or not.

    Args:
      directory: folder holding the four files.
      split: "train" or "test" (the ``t10k`` files).
      num_classes: number of classes; default: largest label + 1.

    Returns:
      A Dataset of shape [N, rows, cols, 1], pixel values / 255.
    """
    _check_split(split, IDX_PREFIX)
    if not os.path.isdir(directory):
        raise DataError(f"IDX data directory not found: {directory} (set the config key data.dir "
                        f"or ${DATA_DIR_ENV})")
    prefix = IDX_PREFIX[split]
    images_path = _find_idx_file(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(images_path, IMAGES_MAGIC, 3)  # [N, rows, cols]
    labels = _read_idx(labels_path, LABELS_MAGIC, 1)  # [N]
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    images = (images.astype(np.float32) / 255.0)[..., None]  # [N, rows, cols, 1]
    labels = labels.astype(np.int32)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    name = f"{os.path.basename(os.path.normpath(directory))}/{split}"
    return Dataset(images, labels, num_classes, name)


def load_tfds(name: str, split: str, *, data_dir: str | None = None) -> Dataset:
    """Any TFDS image classification data set (``mnist``, ``fashion_mnist``, ...).

    Reads the prepared data set through ``tfds.data_source`` (random access, no TensorFlow
    needed). Preparing (downloading and building) a data set does need TensorFlow: the
    ``tfds`` extra.

    Args:
      name: TFDS name, e.g. "mnist".
      split: TFDS split, e.g. "train", "test", "train[:10%]".
      data_dir: TFDS data folder; None for TFDS's default.

    Returns:
      A Dataset with images / 255, [N, H, W, C] (a channel axis added to [H, W] images).
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"the tfds source needs tensorflow_datasets: {TFDS_INSTALL} "
            f'(or pip install "vscjax[test]" to read prepared data sets only)'
        ) from e
    where = data_dir or "TFDS's default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as e:
        raise DataError(f"unknown TFDS data set {name!r}: {str(e).splitlines()[0]}") from e
    except ImportError as e:
        raise DataError(
            f"TFDS data set {name!r} is not prepared in {where}, and preparing it failed ({e}); "
            f"building TFDS data sets needs TensorFlow: {TFDS_INSTALL}, or point data_dir at "
            f"a prepared copy"
        ) from e
    records = [source[i] for i in range(len(source))]
    if not records:
        raise DataError(f"TFDS {name}: split {split!r} is empty")
    if not {"image", "label"} <= records[0].keys():
        raise DataError(f"TFDS {name}: expected keys 'image' and 'label', got {sorted(records[0])}")
    images = np.stack([np.asarray(r["image"]) for r in records])  # [N, H, W(, C)]
    if images.dtype != np.uint8:
        raise DataError(f"TFDS {name}: expected uint8 images, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]  # [N, H, W, 1]
    images = images.astype(np.float32) / 255.0
    labels = np.array([r["label"] for r in records], dtype=np.int32)  # [N]
    info = getattr(source, "dataset_info", None)
    num_classes = getattr(info.features["label"], "num_classes", None) if info else None
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    return Dataset(images, labels, num_classes, f"{name}/{split}")


def load_shapes(name: str, split: str) -> Dataset:
    """The synthetic shapes of :mod:`vscjax.shapes`, made in process: 32x32 grey images of
    5 classes with every image's generative factors.

    Args:
      name: the grid, "shapes" (the full grid) or "shapes-<n>" (n values of every factor).
      split: "train" (the grid minus its fixed test part) or "test".

    Returns:
      A Dataset of shape [N, 32, 32, 1] with 5 classes, ``factors`` and ``factor_names``.
    """
    _check_split(split, ("train", "test"))
    try:
        grid = shapes.grid_from_name(name)
    except ValueError as err:
        raise DataError(str(err)) from None
    images, labels, factors = shapes.generate(grid)
    idx = holdout_indices(len(labels), shapes.TEST_FRACTION, shapes.TEST_SPLIT_SEED)[split == "test"]
    return Dataset(images[idx], labels[idx], len(shapes.CLASSES), f"{name}/{split}",
                   factors=factors[idx], factor_names=shapes.FACTOR_NAMES)


def load_own_files(source: str, path: str, split: str, *, name: str) -> Dataset:
    """The user's own images (:mod:`vscjax.image_files`): an .npz file or a folder of classes.

    Args:
      source: "npz" or "folder".
      path: the file or folder (the config key ``data.dir``).
      split: "train" or "test": the file's own test split where it has one, else a fixed,
        seeded hold-out of ``TEST_FRACTION`` of the images (:func:`holdout_indices` with
        ``TEST_SEED``); "train" is the rest.
      name: the data set's name in logs and reports.

    Returns:
      A Dataset of float32 images in [0, 1] (uint8 pixels / 255), [N, H, W, C].
    """
    _check_split(split, IDX_PREFIX)
    if not path:
        raise DataError(f"config key data.dir: the {source} source reads {OWN_FILES[source]}, "
                        "named by data.dir; none given")
    try:
        own = image_files.read_npz(path) if source == "npz" else image_files.read_folder(path)
    except image_files.ImageFileError as err:
        raise DataError(str(err)) from None
    if own.test_images is not None:
        images, labels = (own.images, own.labels) if split == "train" else (own.test_images, own.test_labels)
    else:
        train_idx, test_idx = holdout_indices(len(own.labels), TEST_FRACTION, TEST_SEED)
        idx = train_idx if split == "train" else test_idx
        images, labels = own.images[idx], own.labels[idx]
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    return Dataset(images, labels, own.num_classes, f"{name}/{split}")


def default_data_root() -> str:
    """``$VSCJAX_DATA_DIR``, else the per-user cache folder (:func:`download.cache_dir`)."""
    return os.environ.get(DATA_DIR_ENV) or download.cache_dir()


def resolve_data_dir(dir_value: str, name: str) -> str:
    """The folder of data set ``name``: ``dir_value`` if set, else ``<default_data_root()>/<name>``."""
    return dir_value or os.path.join(default_data_root(), name)


def holdout_indices(num_examples: int, fraction: float = VALIDATION_FRACTION,
                    seed: int = VALIDATION_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices into a set of ``num_examples`` images.

    By default the held-out part is the validation split of a source's training set. It is
    ``round(num_examples * fraction)`` images (at least 1 when there are 2 or more) drawn
    with the fixed ``seed``: the same images for every run, seed and config.

    Returns:
      Both index arrays, sorted ([N_kept] and [N_held_out] int64).
    """
    if num_examples < 2:
        raise DataError(f"a set of {num_examples} images cannot hold out a part")
    num_held_out = min(max(round(num_examples * fraction), 1), num_examples - 1)
    order = np.random.default_rng(seed).permutation(num_examples)
    return np.sort(order[num_held_out:]), np.sort(order[:num_held_out])


def _subset(dataset: Dataset, idx: np.ndarray, name: str) -> Dataset:
    factors = None if dataset.factors is None else dataset.factors[idx]
    return Dataset(dataset.images[idx], dataset.labels[idx], dataset.num_classes, name,
                   factors=factors, factor_names=dataset.factor_names)


def _load_source(source: str, name: str, split: str, data_dir: str, mirror: str) -> Dataset:
    """The source's own split ("train": its whole training set, "test", or a TFDS split)."""
    if source == "digits":
        return load_digits(split)
    if source == "idx":
        directory = resolve_data_dir(data_dir, name)
        try:
            download.ensure_idx_files(name, directory, mirror)
        except download.DownloadError as err:
            raise DataError(str(err)) from err
        return load_idx(directory, split)
    if source == "tfds":
        return load_tfds(name, split, data_dir=data_dir or None)
    if source == "shapes":
        return load_shapes(name, split)
    if source in OWN_FILES:
        return load_own_files(source, data_dir, split, name=name)
    raise DataError(f"unknown data source {source!r}; expected one of {', '.join(SOURCES)}")


def load(source: str, name: str, split: str, *, data_dir: str = "", mirror: str = "") -> Dataset:
    """Load ``split`` of data set ``name`` from ``source`` (one of ``SOURCES``).

    Args:
      source: "digits" (scikit-learn's, ``name`` unused), "idx" (files in
        :func:`resolve_data_dir`), "tfds", "shapes" (:func:`load_shapes`, made in process), "npz"
        or "folder" (:func:`load_own_files`: ``data_dir`` is the file or the folder).
      name: data set name, e.g. "mnist", or the shapes grid ("shapes", "shapes-<n>").
      split: "train" (the source's training set minus the validation part), "validation"
        (:func:`holdout_indices`) or "test" (the source's test set); TFDS also takes its own
        split syntax ("train[:10%]"), read as it is.
      data_dir: data folder; "" for the default of the source.
      mirror: base URL the IDX files of a known data set are downloaded from when missing;
        "" for the data set's canonical mirror (:mod:`vscjax.download`).
    """
    if source != "tfds":
        _check_split(split, SPLITS)
    if split not in ("train", "validation"):
        return _load_source(source, name, split, data_dir, mirror)
    full = _load_source(source, name, "train", data_dir, mirror)
    train_idx, validation_idx = holdout_indices(len(full.labels))
    base = full.name.rsplit("/", 1)[0]
    if split == "train":
        return _subset(full, train_idx, f"{base}/train")
    return _subset(full, validation_idx, f"{base}/validation")


class BatchSampler:
    """Indices of every batch as a pure function of (seed, step): resuming at step k needs only k.

    The permutations come from the "data" stream of :mod:`vscjax.rng`. Not balanced: shuffled
    epochs without replacement; epoch e is the permutation ``default_rng(numpy_seed(seed,
    "data", e, 0))`` of all N indices, cut into N // batch_size batches (the remainder is
    dropped).

    Balanced: each batch holds m = batch_size / num_classes samples of each class, in
    class-major order (m of class 0, then m of class 1, ...). Class c walks through its own
    epochs, the permutations ``default_rng(numpy_seed(seed, "data", e, c + 1))`` of its
    samples, m at a time.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        *,
        seed: int,
        num_classes: int,
        balanced: bool = False,
    ):
        labels = np.asarray(labels)
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if batch_size > len(labels):
            raise DataError(f"batch_size {batch_size} exceeds the {len(labels)} samples")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"labels span [{labels.min()}, {labels.max()}], outside [0, {num_classes})")
        self.batch_size = batch_size
        self.seed = seed
        self.num_classes = num_classes
        self.balanced = balanced
        self.num_examples = len(labels)
        self._cache = {}  # stream -> (epoch, permutation); stream None: all samples, c: class c
        if balanced:
            if batch_size % num_classes:
                raise DataError(
                    f"balanced batches need batch_size ({batch_size}) divisible by "
                    f"num_classes ({num_classes})"
                )
            self.per_class = batch_size // num_classes
            self.class_indices = [np.flatnonzero(labels == c) for c in range(num_classes)]
            for c, idx in enumerate(self.class_indices):
                if len(idx) < self.per_class:
                    raise DataError(
                        f"class {c} has {len(idx)} samples, fewer than the {self.per_class} "
                        f"per batch that balanced batches of {batch_size} need"
                    )

    def _permutation(self, stream: int | None, epoch: int, n: int) -> np.ndarray:
        cached = self._cache.get(stream)
        if cached is None or cached[0] != epoch:
            part = 0 if stream is None else stream + 1  # 0: all samples, c + 1: class c
            entropy = rng.numpy_seed(self.seed, "data", epoch, part)
            cached = (epoch, np.random.default_rng(entropy).permutation(n))
            self._cache[stream] = cached
        return cached[1]

    def _slice(self, stream: int | None, step: int, n: int, size: int) -> np.ndarray:
        """Positions in [0, n) taken at ``step`` by a stream drawing ``size`` per step."""
        epoch, i = divmod(step, n // size)
        return self._permutation(stream, epoch, n)[i * size : (i + 1) * size]

    def indices(self, step: int) -> np.ndarray:
        """Indices into the data set of the batch at ``step``: [batch_size] int64."""
        if step < 0:
            raise DataError(f"step must be >= 0, got {step}")
        if not self.balanced:
            return self._slice(None, step, self.num_examples, self.batch_size).astype(np.int64)
        m = self.per_class
        return np.concatenate(
            [idx[self._slice(c, step, len(idx), m)] for c, idx in enumerate(self.class_indices)]
        ).astype(np.int64)


class _Failure:
    """An exception raised in the loader thread, carried to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


class BatchIterator:
    """Iterator over (step, batch) filled by a daemon thread; see :func:`batch_iterator`."""

    def __init__(self, dataset, sampler, start_step, sharding, prefetch):
        if prefetch < 1:
            raise DataError(f"prefetch must be >= 1, got {prefetch}")
        self._dataset = dataset
        self._sampler = sampler
        self._sharding = sharding
        self._rows = (np.arange(sampler.batch_size) if sharding is None
                      else process_rows(sharding, sampler.batch_size))  # [B_local]
        self._queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(start_step,), daemon=True)
        self._thread.start()

    def _place(self, array: np.ndarray) -> jax.Array:
        if self._sharding is None:
            return jax.device_put(array)
        return global_batch(array, self._sharding, self._sampler.batch_size)

    def _put(self, item) -> bool:
        """Queue ``item``, waiting while the queue is full; False if stopped meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _produce(self, step: int) -> None:
        try:
            while True:
                idx = self._sampler.indices(step)[self._rows]  # [B_local]
                batch = {
                    "image": self._place(self._dataset.images[idx]),  # [B, H, W, C]
                    "label": self._place(self._dataset.labels[idx]),  # [B]
                }
                if not self._put((step, batch)):
                    return
                step += 1
        except BaseException as e:  # noqa: BLE001  (re-raised in the consumer)
            self._put(_Failure(e))

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> tuple[int, dict]:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stop the loader thread and drop the batches it has prefetched."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def batch_iterator(
    dataset: Dataset,
    sampler: BatchSampler,
    *,
    start_step: int,
    sharding: jax.sharding.Sharding | None = None,
    prefetch: int = 2,
) -> Iterator[tuple[int, dict]]:
    """(step, batch) for step = start_step, start_step + 1, ... without end.

    A daemon thread gathers each batch ``sampler.indices(step)`` and places it on the
    device(s), at most ``prefetch`` batches ahead, so host-to-device transfer overlaps with
    compute. An exception in the thread is re-raised by ``next``. Stop the thread with
    ``.close()`` or by using the iterator as a context manager.

    Args:
      dataset: the data set to draw from.
      sampler: gives the global batch's indices at each step.
      start_step: first step (a resumed run passes its step).
      sharding: sharding of the batch axis, e.g. ``NamedSharding(mesh, P("data"))``; each
        process gathers only the rows its devices hold. None: the default device.
      prefetch: batches prepared ahead.

    Returns:
      An iterator of (step, {"image": [B, H, W, C] float32, "label": [B] int32}) with jax.Arrays.
    """
    return BatchIterator(dataset, sampler, start_step, sharding, prefetch)
