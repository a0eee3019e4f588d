"""The user's own data: an .npz of arrays and a folder of images per class, read back exactly,
split as documented, trained on, and every bad file named in one line."""

import os

import numpy as np
import pytest
from PIL import Image

from helpers import load_config
from vscjax import data, evaluate, image_files, train


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _png(path, pixels):
    """Write uint8 pixels [H, W] (grey) or [H, W, 3] (colour) as a PNG (lossless)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path)


def _pixels(rng, n, shape=(8, 8, 1)):
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def _as_uint8(dataset):
    """The pixels a data set of values / 255 was made from."""
    return np.round(dataset.images * 255).astype(np.uint8)


def _rows(images):
    """Each image as one row of bytes, sorted: the set of images regardless of order."""
    flat = images.reshape(len(images), -1)
    return flat[np.lexsort(flat.T[::-1])]


# ----------------------------------------------------------------------------- npz


def test_npz_with_a_test_split_of_its_own(tmp_path):
    rng = np.random.default_rng(0)
    images, test_images = _pixels(rng, 48), _pixels(rng, 12)
    labels, test_labels = np.arange(48) % 4, np.arange(12) % 5  # class 4: the test split only
    path = _npz(tmp_path / "mine.npz", images=images, labels=labels, images_test=test_images,
                labels_test=test_labels)
    splits = {split: data.load("npz", "mine", split, data_dir=path) for split in data.SPLITS}
    test = splits["test"]
    np.testing.assert_array_equal(_as_uint8(test), test_images)
    np.testing.assert_array_equal(test.labels, test_labels)
    assert test.images.dtype == np.float32 and test.name == "mine/test"
    assert {ds.num_classes for ds in splits.values()} == {5}  # the largest label of either split + 1
    # train and validation: the file's training images, every one once.
    kept = np.concatenate([_as_uint8(splits["train"]), _as_uint8(splits["validation"])])
    np.testing.assert_array_equal(_rows(kept), _rows(images))
    assert len(splits["validation"].labels) == 4  # a twelfth


def test_npz_without_a_test_split_holds_out_a_fixed_fifth(tmp_path):
    n = 50
    images = (np.arange(n, dtype=np.float64) / n)[:, None, None, None] * np.ones((1, 4, 4, 3))
    path = _npz(tmp_path / "mine.npz", images=images, labels=np.arange(n) % 3)
    splits = {split: data.load("npz", "mine", split, data_dir=path) for split in data.SPLITS}
    ids = {split: sorted(np.round(ds.images[:, 0, 0, 0] * n).astype(int)) for split, ds in splits.items()}
    assert len(ids["test"]) == 10 and len(ids["validation"]) == 3 and len(ids["train"]) == 37
    assert sorted(sum(ids.values(), [])) == list(range(n))  # disjoint, and every image in one
    again = data.load("npz", "mine", "test", data_dir=path)
    np.testing.assert_array_equal(again.images, splits["test"].images)  # the same every time
    np.testing.assert_allclose(splits["test"].images, images[ids["test"]].astype(np.float32))


# ----------------------------------------------------------------------------- folder


def test_folder_classes_are_the_sorted_folder_names_and_pixels_are_exact(tmp_path):
    rng = np.random.default_rng(1)
    written = {"cat": _pixels(rng, 2, (5, 6)), "ant": _pixels(rng, 1, (5, 6)),
               "bee": _pixels(rng, 3, (5, 6))}
    for name, pictures in written.items():
        for i, picture in enumerate(pictures):
            _png(str(tmp_path / "pets" / name / f"{i}.png"), picture)
    (tmp_path / "pets" / "bee" / "notes.txt").write_text("not an image")  # skipped
    arrays = image_files.read_folder(str(tmp_path / "pets"))
    assert arrays.num_classes == 3 and arrays.test_images is None
    np.testing.assert_array_equal(arrays.labels, [0, 1, 1, 1, 2, 2])  # ant, bee, cat
    expected = np.concatenate([written["ant"], written["bee"], written["cat"]])[..., None]
    np.testing.assert_array_equal(arrays.images, expected)  # [6, 5, 6, 1]


def test_a_folder_with_a_colour_image_is_read_in_colour(tmp_path):
    rng = np.random.default_rng(2)
    grey, colour = _pixels(rng, 1, (4, 4))[0], _pixels(rng, 1, (4, 4, 3))[0]
    _png(str(tmp_path / "f" / "a" / "grey.png"), grey)
    Image.fromarray(colour).save(tmp_path / "f" / "a" / "colour.jpg", quality=95)
    arrays = image_files.read_folder(str(tmp_path / "f"))
    assert arrays.images.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(arrays.images[1], np.repeat(grey[..., None], 3, -1))  # grey.png
    jpeg = np.asarray(Image.open(tmp_path / "f" / "a" / "colour.jpg"))  # lossy: as decoded
    np.testing.assert_array_equal(arrays.images[0], jpeg)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("source", ["npz", "folder"])
def test_a_run_trains_and_evaluates_on_own_files(tmp_path, source):
    rng = np.random.default_rng(3)
    images, labels = _pixels(rng, 200), np.arange(200) % 4
    if source == "npz":
        path = _npz(tmp_path / "mine.npz", images=images, labels=labels)
    else:
        path = str(tmp_path / "mine")
        for i, (picture, label) in enumerate(zip(images, labels, strict=True)):
            _png(os.path.join(path, f"class{label}", f"{i:03d}.png"), picture[..., 0])
    config = load_config("tiny", data__source=source, data__name="mine", data__dir=path,
                         train__num_steps=4, train__eval_batch_size=16)
    summary = train.run(config, str(tmp_path / "run"))
    assert summary["step"] == 4 and np.isfinite(summary["exact_neg_elbo"])
    results = evaluate.evaluate_workdir(str(tmp_path / "run"), probe_train=40, pairs=100, make_plots=False)
    assert results["num_examples"] == 40 and np.isfinite(results["elbo"]["exact_neg_elbo"])


# ----------------------------------------------------------------------------- bad files


def _bad_npz(tmp_path, **changes):
    rng = np.random.default_rng(4)
    arrays = {"images": _pixels(rng, 6), "labels": np.arange(6) % 2, **changes}
    return _npz(tmp_path / "bad.npz", **{key: value for key, value in arrays.items() if value is not None})


BAD_NPZ = [
    (dict(labels=None), "bad.npz: no array 'labels' (it holds ['images'])"),
    (dict(images=np.zeros((6, 8, 8), np.uint8)), "bad.npz: images must be [N, H, W, C] with N > 0 and "
                                                 "C in (1, 3), got shape (6, 8, 8) (add a channel axis"),
    (dict(images=np.zeros((6, 8, 8, 2), np.uint8)), "got shape (6, 8, 8, 2)"),
    (dict(images=np.full((6, 2, 2, 1), 255.0)), "bad.npz: images span [255, 255], outside [0, 1]"),
    (dict(images=np.full((6, 2, 2, 1), np.nan, np.float32)),
     "bad.npz: images hold 24 values that are not finite"),
    (dict(images=np.zeros((6, 2, 2, 1), np.int64)), "bad.npz: images must be uint8 (0 to 255) or float "
                                                    "in [0, 1], got int64"),
    (dict(labels=np.zeros(6)), "bad.npz: labels must be integers (class 0, 1, ...), got float64"),
    (dict(labels=np.array([0, 1, -1, 0, 1, 0])), "bad.npz: labels hold -1; classes are numbered from 0"),
    (dict(labels=np.zeros(5, int)),
     "bad.npz: labels must be [N] with one label per image (6), got shape (5,)"),
    (dict(images_test=np.zeros((2, 8, 8, 1), np.uint8)),
     "a test split needs both 'images_test' and 'labels_test'"),
    (dict(images_test=np.zeros((2, 4, 4, 1), np.uint8), labels_test=np.zeros(2, int)),
     "bad.npz: images_test are (4, 4, 1) [H, W, C], images are (8, 8, 1)"),
]


@pytest.mark.parametrize("changes, words", BAD_NPZ)
def test_a_bad_npz_is_named_in_one_line(tmp_path, changes, words):
    path = _bad_npz(tmp_path, **changes)
    with pytest.raises(data.DataError) as error:
        data.load("npz", "bad", "train", data_dir=path)
    assert words in str(error.value) and "\n" not in str(error.value)


def _odd_size(root):
    _png(os.path.join(root, "a", "1.png"), np.zeros((8, 8)))
    _png(os.path.join(root, "b", "2.png"), np.zeros((8, 9)))


def _sixteen_bits(root):
    os.makedirs(os.path.join(root, "a"))
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(os.path.join(root, "a", "deep.png"))


def _not_an_image(root):
    _png(os.path.join(root, "a", "1.png"), np.zeros((8, 8)))
    os.makedirs(os.path.join(root, "b"))
    open(os.path.join(root, "b", "cut.png"), "wb").write(b"\x89PNG\r\n")


BAD_FOLDERS = [
    (lambda root: os.makedirs(root), "{root}: no class folders in it"),
    (lambda root: os.makedirs(os.path.join(root, "a")), "{root}/a: class 0 holds no image"),
    (_odd_size, "{root}/b/2.png: 9x8 pixels, but {root}/a/1.png is 8x8; images are not resized"),
    (_sixteen_bits, "{root}/a/deep.png: I;16 pixels (16 or 32 bits); only 8-bit images are read"),
    (_not_an_image, "{root}/b/cut.png: cannot read it as an image"),
    (lambda root: None, "{root}: no such folder"),
]


@pytest.mark.parametrize("make, words", BAD_FOLDERS)
def test_a_bad_folder_is_named_in_one_line(tmp_path, make, words):
    root = str(tmp_path / "images")
    make(root)
    with pytest.raises(data.DataError) as error:
        data.load("folder", "images", "test", data_dir=root)
    assert words.format(root=root) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("source", ["npz", "folder"])
def test_own_files_need_data_dir(source):
    with pytest.raises(data.DataError, match=f"config key data.dir: the {source} source reads"):
        data.load(source, "mine", "train")
