"""Tests of vscjax.data: sources against independent reads, the sampler's invariants, the loader."""

import hashlib
import os
import struct
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from helpers import write_idx
from vscjax import data

# md5 of the uncompressed MNIST files, from shared/data/README.md.
MNIST_MD5 = {
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _idx_bytes(ds: data.Dataset) -> tuple[bytes, bytes]:
    """The IDX files (images, labels) a data set read from IDX files must have come from."""
    n, rows, cols, _ = ds.images.shape
    pixels = np.round(ds.images[..., 0] * 255).astype(np.uint8)
    images = struct.pack(">IIII", 2051, n, rows, cols) + pixels.tobytes()
    labels = struct.pack(">II", 2049, n) + ds.labels.astype(np.uint8).tobytes()
    return images, labels


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_range_and_split():
    train = data.load_digits("train", seed=0)
    test = data.load_digits("test", seed=0)
    assert train.images.shape[1:] == (8, 8, 1) and test.images.shape[1:] == (8, 8, 1)
    assert len(train.images) + len(test.images) == 1797
    assert len(test.images) == pytest.approx(0.2 * 1797, abs=1)
    for ds in (train, test):
        assert ds.num_classes == 10 and ds.images.dtype == np.float32
        assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
        assert set(np.unique(ds.labels)) == set(range(10))
    # Train and test partition the sklearn set: their rows, together, are exactly its rows.
    from sklearn.datasets import load_digits

    ref = load_digits()

    def rows(images, labels):  # one row per sample: its pixels, then its label
        return np.column_stack([images.reshape(len(labels), -1), labels])

    ours = np.concatenate(
        [rows(train.images * 16, train.labels), rows(test.images * 16, test.labels)]
    )
    theirs = rows(ref.images, ref.target)
    np.testing.assert_array_equal(
        ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)].astype(ours.dtype)
    )
    # Stratified: each class's test share is within one image of the overall share.
    for c in range(10):
        n_c = np.sum(ref.target == c)
        assert abs(np.sum(test.labels == c) - 0.2 * n_c) <= 1


def test_digits_split_is_fixed_and_seeded():
    a, b = data.load_digits("test", seed=3), data.load_digits("test", seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = data.load_digits("test", seed=4)
    assert not np.array_equal(a.images, c.images)
    # load() never takes a run's seed: its test split is the fixed one.
    fixed = data.load("digits", "digits", "test")
    np.testing.assert_array_equal(fixed.images, data.load_digits("test", seed=data.DIGITS_SPLIT_SEED).images)


@pytest.mark.parametrize("n", [2, 13, 1437, 60_000])
def test_holdout_is_fixed_disjoint_and_one_twelfth(n):
    train, validation = data.holdout_indices(n)
    again = data.holdout_indices(n)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(validation, again[1])
    assert len(np.intersect1d(train, validation)) == 0
    np.testing.assert_array_equal(np.union1d(train, validation), np.arange(n))
    assert len(validation) == max(1, round(n / 12))
    if n == 60_000:
        assert len(validation) == 5_000
        # Spread over the whole file, not its first rows.
        assert validation.min() < 100 and validation.max() > 59_900


def test_load_gives_three_disjoint_splits_of_digits():
    splits = {s: data.load("digits", "digits", s) for s in data.SPLITS}
    full_train = data.load_digits("train", seed=data.DIGITS_SPLIT_SEED)
    assert len(splits["train"].labels) + len(splits["validation"].labels) == len(full_train.labels)
    assert len(splits["validation"].labels) == round(len(full_train.labels) / 12)
    rows = {s: {ds.images[i].tobytes() + bytes([ds.labels[i]]) for i in range(len(ds.labels))}
            for s, ds in splits.items()}
    assert not rows["train"] & rows["validation"]
    assert not rows["train"] & rows["test"] and not rows["validation"] & rows["test"]
    assert splits["validation"].name == "digits/validation"
    with pytest.raises(data.DataError, match="unknown split 'valid'.*validation"):
        data.load("digits", "digits", "valid")


def test_mnist_validation_is_5000_training_images(mnist_dir):
    root, name = os.path.split(mnist_dir)
    validation = data.load("idx", name, "validation", data_dir=mnist_dir)
    train = data.load("idx", name, "train", data_dir=mnist_dir)
    full = data.load_idx(mnist_dir, "train")
    assert len(validation.labels) == 5_000 and len(train.labels) == 55_000
    _, idx = data.holdout_indices(60_000)
    np.testing.assert_array_equal(validation.images, full.images[idx])
    np.testing.assert_array_equal(validation.labels, full.labels[idx])
    assert set(np.unique(validation.labels)) == set(range(10))


def test_digits_bad_split():
    with pytest.raises(data.DataError, match="valid|expected"):
        data.load_digits("validation")


# ----------------------------------------------------------------------------- IDX


def test_idx_real_mnist_matches_files(mnist_dir):
    test = data.load_idx(mnist_dir, "test")
    assert test.images.shape == (10_000, 28, 28, 1) and test.num_classes == 10
    assert test.images.min() >= 0.0 and test.images.max() <= 1.0
    images, labels = _idx_bytes(test)
    assert hashlib.md5(images).hexdigest() == MNIST_MD5["t10k-images-idx3-ubyte"]
    assert hashlib.md5(labels).hexdigest() == MNIST_MD5["t10k-labels-idx1-ubyte"]
    train = data.load_idx(mnist_dir, "train")
    assert train.images.shape == (60_000, 28, 28, 1) and len(train.labels) == 60_000


def test_load_dispatch_idx_uses_env(mnist_dir, monkeypatch):
    monkeypatch.setenv("VSCJAX_DATA_DIR", os.path.dirname(mnist_dir))
    ds = data.load("idx", os.path.basename(mnist_dir), "test")
    assert ds.images.shape == (10_000, 28, 28, 1)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_small_files_roundtrip(tmp_path, gz):
    pixels, labels = write_idx(tmp_path, "test", n_images=7, n_labels=7, gz=gz)
    ds = data.load_idx(str(tmp_path), "test")
    np.testing.assert_array_equal(ds.images[..., 0], pixels.astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int32
    assert ds.num_classes == labels.max() + 1
    assert data.load_idx(str(tmp_path), "test", num_classes=12).num_classes == 12


def test_idx_prefers_gz(tmp_path):
    gz_pixels, _ = write_idx(tmp_path, gz=True, seed=1)
    write_idx(tmp_path, gz=False, seed=2)
    ds = data.load_idx(str(tmp_path), "train")
    np.testing.assert_array_equal(ds.images[..., 0], gz_pixels.astype(np.float32) / 255)


def test_idx_missing_directory_and_file(tmp_path):
    with pytest.raises(data.DataError, match="nowhere"):
        data.load_idx(str(tmp_path / "nowhere"), "train")
    write_idx(tmp_path, "train")
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte\.gz.*t10k-images-idx3-ubyte"):
        data.load_idx(str(tmp_path), "test")


@pytest.mark.parametrize(
    "kwargs, file, message",
    [
        (dict(images_magic=2049), "train-images-idx3-ubyte.gz", "expected 2051, got 2049"),
        (dict(labels_magic=2051), "train-labels-idx1-ubyte.gz", "expected 2049, got 2051"),
        (dict(cut=3), "train-images-idx3-ubyte.gz", "truncated"),
        (dict(n_labels=4), "train-images-idx3-ubyte.gz", "5 images.*train-labels-idx1-ubyte.gz.*4"),
    ],
)
def test_idx_errors_name_the_file(tmp_path, kwargs, file, message):
    write_idx(tmp_path, **kwargs)
    with pytest.raises(data.DataError, match=message) as info:
        data.load_idx(str(tmp_path), "train")
    assert str(tmp_path / file) in str(info.value)


def test_idx_corrupt_gzip(tmp_path):
    write_idx(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz"):
        data.load_idx(str(tmp_path), "train")


# ----------------------------------------------------------------------------- TFDS
# tfds.testing.mock_data patches DatasetBuilder.as_data_source, so tfds.data_source returns an
# ArrayRecordDataSource over random examples built from the builder's features (mnist: image
# [28, 28, 1] uint8, label int64 in [0, 10)); the builder code and features come with
# tensorflow_datasets itself, so neither TensorFlow nor prepared files are needed.


def test_tfds_mock_mnist():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = data.load_tfds("mnist", "train")
        reference = tfds.data_source("mnist", split="train")
        expected = np.stack([reference[i]["image"] for i in range(len(reference))])
    assert ds.images.shape == (6, 28, 28, 1) and ds.images.dtype == np.float32
    np.testing.assert_allclose(ds.images, expected.astype(np.float32) / 255)
    assert ds.num_classes == 10 and ds.labels.dtype == np.int32
    assert ds.labels.min() >= 0 and ds.labels.max() < 10


def test_tfds_adds_channel_axis():
    tfds = pytest.importorskip("tensorflow_datasets")
    rng = np.random.default_rng(0)
    records = [
        {"image": rng.integers(0, 256, (5, 4), dtype=np.uint8), "label": np.int64(i % 3)}
        for i in range(4)
    ]
    with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: records):
        ds = data.load_tfds("mnist", "train")
    assert ds.images.shape == (4, 5, 4, 1)
    np.testing.assert_allclose(ds.images[1, ..., 0], records[1]["image"] / 255.0, rtol=1e-6)
    assert ds.num_classes == 3  # no dataset_info on a plain list: largest label + 1


def test_tfds_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(data.DataError, match=r'pip install "vscjax\[tfds\]"'):
        data.load_tfds("mnist", "train")


def test_tfds_not_prepared_without_tensorflow(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    def data_source(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'tensorflow'")

    monkeypatch.setattr(tfds, "data_source", data_source)
    with pytest.raises(data.DataError, match=r'pip install "vscjax\[tfds\]"') as info:
        data.load_tfds("mnist", "train", data_dir=str(tmp_path))
    assert str(tmp_path) in str(info.value)


# ----------------------------------------------------------------------------- dispatch


def test_resolve_data_dir(monkeypatch, tmp_path):
    assert data.resolve_data_dir("/x/y", "mnist") == "/x/y"
    monkeypatch.setenv("VSCJAX_DATA_DIR", "/root/data")
    assert data.resolve_data_dir("", "mnist") == "/root/data/mnist"
    monkeypatch.delenv("VSCJAX_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/home/u/.xdg")
    assert data.resolve_data_dir("", "mnist") == "/home/u/.xdg/vscjax/mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert data.resolve_data_dir("", "mnist") == "/home/u/.cache/vscjax/mnist"
    # A data set vscjax cannot download: the IDX reader names the missing folder.
    nowhere = str(tmp_path / "nowhere")
    with pytest.raises(data.DataError, match=f"IDX data directory not found: {nowhere}"):
        data.load("idx", "kmnist", "test", data_dir=nowhere)


def test_load_unknown_source():
    with pytest.raises(data.DataError, match="digits, idx, tfds"):
        data.load("csv", "mnist", "train")


def test_dataset_validation():
    images = np.zeros((3, 2, 2, 1), np.float32)
    labels = np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="float32"):
        data.Dataset(images.astype(np.float64), labels, 2, "x")
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        data.Dataset(images[..., 0], labels, 2, "x")
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        data.Dataset(images, labels[:2], 2, "x")
    with pytest.raises(ValueError, match="outside"):
        data.Dataset(images, labels + 2, 2, "x")


# ----------------------------------------------------------------------------- sampler


def _labels(counts, seed=0):
    """Shuffled labels with ``counts[c]`` samples of class c."""
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    return np.random.default_rng(seed).permutation(labels)


def test_sampler_epochs_cover_each_index_once():
    n, b = 103, 10  # 10 steps per epoch, 3 samples dropped each epoch
    sampler = data.BatchSampler(np.zeros(n, np.int32), b, seed=1, num_classes=1)
    for epoch in range(3):
        batches = [sampler.indices(epoch * 10 + i) for i in range(10)]
        assert all(x.shape == (b,) and x.dtype == np.int64 for x in batches)
        seen = np.concatenate(batches)
        assert len(np.unique(seen)) == 100 and seen.min() >= 0 and seen.max() < n
    assert not np.array_equal(sampler.indices(0), sampler.indices(10))


def test_sampler_pure_function_of_step():
    labels = _labels([30, 40, 50])
    a = data.BatchSampler(labels, 12, seed=7, num_classes=3)
    b = data.BatchSampler(labels, 12, seed=7, num_classes=3)
    forward = [a.indices(s) for s in range(25)]
    backward = [b.indices(s) for s in reversed(range(25))][::-1]
    for x, y in zip(forward, backward):
        np.testing.assert_array_equal(x, y)
    c = data.BatchSampler(labels, 12, seed=8, num_classes=3)
    assert not np.array_equal(forward[0], c.indices(0))


def test_balanced_sampler():
    counts = [9, 25, 14]
    labels = _labels(counts)
    m = 3
    sampler = data.BatchSampler(labels, 3 * m, seed=0, num_classes=3, balanced=True)
    per_class_draws = {c: [] for c in range(3)}
    for step in range(40):
        idx = sampler.indices(step)
        assert idx.shape == (9,) and idx.dtype == np.int64
        np.testing.assert_array_equal(labels[idx], np.repeat(np.arange(3), m))  # class-major
        for c in range(3):
            per_class_draws[c].append(idx[c * m : (c + 1) * m])
    for c, n_c in enumerate(counts):
        steps_per_epoch = n_c // m
        draws = per_class_draws[c]
        for start in range(0, 40 - steps_per_epoch + 1, steps_per_epoch):
            epoch = np.concatenate(draws[start : start + steps_per_epoch])
            assert len(np.unique(epoch)) == len(epoch)  # no repeats within a class epoch
    # Resuming: a fresh sampler gives the same batch at a late step.
    again = data.BatchSampler(labels, 9, seed=0, num_classes=3, balanced=True)
    np.testing.assert_array_equal(again.indices(39), sampler.indices(39))


def test_sampler_errors():
    labels = _labels([10, 10, 2])
    with pytest.raises(data.DataError, match=r"batch_size \(10\).*num_classes \(3\)"):
        data.BatchSampler(labels, 10, seed=0, num_classes=3, balanced=True)
    with pytest.raises(data.DataError, match="class 2 has 2 samples"):
        data.BatchSampler(labels, 9, seed=0, num_classes=3, balanced=True)
    with pytest.raises(data.DataError, match="exceeds"):
        data.BatchSampler(labels, 23, seed=0, num_classes=3)
    with pytest.raises(data.DataError, match="positive"):
        data.BatchSampler(labels, 0, seed=0, num_classes=3)


# ----------------------------------------------------------------------------- loader


@pytest.fixture
def small_dataset():
    rng = np.random.default_rng(0)
    images = rng.random((64, 4, 3, 2), dtype=np.float32)
    return data.Dataset(images, _labels([32, 32]), 2, "small")


def test_batch_iterator_sharded_and_resumes(small_dataset):
    mesh = jax.make_mesh((8,), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    sampler = data.BatchSampler(small_dataset.labels, 16, seed=0, num_classes=2)
    with data.batch_iterator(small_dataset, sampler, start_step=5, sharding=sharding) as it:
        for expected_step in range(5, 12):
            step, batch = next(it)
            assert step == expected_step
            idx = sampler.indices(step)
            for key, ndim in (("image", 4), ("label", 1)):
                array = batch[key]
                assert isinstance(array, jax.Array)
                assert array.sharding.is_equivalent_to(sharding, ndim)
                assert len(array.addressable_shards) == 8
                assert array.addressable_shards[0].data.shape[0] == 2
            assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
            np.testing.assert_array_equal(np.asarray(batch["image"]), small_dataset.images[idx])
            np.testing.assert_array_equal(np.asarray(batch["label"]), small_dataset.labels[idx])
    assert not it._thread.is_alive()
    with pytest.raises(StopIteration):
        next(it)


def test_batch_iterator_default_device(small_dataset):
    sampler = data.BatchSampler(small_dataset.labels, 8, seed=3, num_classes=2, balanced=True)
    it = data.batch_iterator(small_dataset, sampler, start_step=0, prefetch=1)
    step, batch = next(it)
    it.close()
    assert step == 0 and batch["image"].shape == (8, 4, 3, 2)
    assert batch["image"].devices() == {jax.devices()[0]}
    np.testing.assert_array_equal(np.asarray(batch["label"]), np.repeat([0, 1], 4))


def test_batch_iterator_reraises_loader_error(small_dataset):
    class FailingSampler(data.BatchSampler):
        def indices(self, step):
            if step == 2:
                raise RuntimeError("disk on fire")
            return super().indices(step)

    sampler = FailingSampler(small_dataset.labels, 8, seed=0, num_classes=2)
    with data.batch_iterator(small_dataset, sampler, start_step=0) as it:
        assert [next(it)[0] for _ in range(2)] == [0, 1]
        with pytest.raises(RuntimeError, match="disk on fire"):
            next(it)
