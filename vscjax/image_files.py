"""The user's own images: an .npz file of arrays, or a folder of image files per class.

* **npz**: a NumPy ``.npz`` file (``np.savez``) holding ``images`` [N, H, W, C] and ``labels``
  [N], and optionally its own test split, ``images_test`` [M, H, W, C] and ``labels_test`` [M].
  Images are uint8 (0 to 255) or floating point in [0, 1]; labels are integers from 0; C is 1
  (grey) or 3 (colour).
* **folder**: one subfolder of PNG or JPEG images per class, as torchvision's ``ImageFolder``
  reads them: the classes are the subfolders in sorted order (class 0 is the first name), each
  holding at least one image (``.png``, ``.jpg``, ``.jpeg``; other files and hidden ones are
  skipped). Images are not resized: all must share one size. Greyscale images give C = 1; a
  folder holding any colour image gives C = 3, its greyscale images repeated over the three
  channels. Images of 16 bits or floats per pixel are refused.

Every problem is a :class:`ImageFileError` naming the file and what is wrong with it. The
readers return the arrays as the files hold them (:class:`ImageArrays`); ``vscjax.data`` turns
them into its data sets and splits.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CHANNELS = (1, 3)
GREY_MODES = ("1", "L", "LA")  # PIL modes read as one grey channel
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # PIL modes of 16 or 32 bits a pixel: refused


class ImageFileError(ValueError):
    """A file of the user's data set that cannot be used; the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class ImageArrays:
    """A data set as its files hold it.

    Attributes:
      images: [N, H, W, C] uint8, or float32 in [0, 1].
      labels: [N] int32 in [0, num_classes).
      test_images, test_labels: the file's own test split, [M, H, W, C] and [M]; None when it
        has none.
      num_classes: one more than the largest label of either split.
    """

    images: np.ndarray  # [N, H, W, C]
    labels: np.ndarray  # [N]
    test_images: np.ndarray | None  # [M, H, W, C]
    test_labels: np.ndarray | None  # [M]
    num_classes: int


# ----------------------------------------------------------------------------- npz


def read_npz(path: str) -> ImageArrays:
    """The arrays of an .npz data set (module docstring), checked.

    Args:
      path: the .npz file.

    Raises:
      ImageFileError: the file is missing or unreadable, a key is missing, or an array has the
        wrong shape, dtype or values.
    """
    if not os.path.isfile(path):
        raise ImageFileError(f"{path}: no such file (data.dir names the .npz file of the npz source)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ImageFileError(f"{path}: cannot read it as an .npz file of arrays ({err})") from None
    for key in ("images", "labels"):
        if key not in arrays:
            raise ImageFileError(f"{path}: no array {key!r} (it holds {sorted(arrays)})")
    if ("images_test" in arrays) != ("labels_test" in arrays):
        raise ImageFileError(f"{path}: a test split needs both 'images_test' and 'labels_test' "
                             f"(it holds {sorted(arrays)})")
    images = _checked_images(arrays["images"], f"{path}: images")
    labels = _checked_labels(arrays["labels"], len(images), f"{path}: labels")
    test_images = test_labels = None
    if "images_test" in arrays:
        test_images = _checked_images(arrays["images_test"], f"{path}: images_test")
        if test_images.shape[1:] != images.shape[1:]:
            raise ImageFileError(f"{path}: images_test are {test_images.shape[1:]} [H, W, C], "
                                 f"images are {images.shape[1:]}")
        test_labels = _checked_labels(arrays["labels_test"], len(test_images), f"{path}: labels_test")
    every_label = labels if test_labels is None else np.concatenate([labels, test_labels])
    return ImageArrays(images, labels, test_images, test_labels, int(every_label.max()) + 1)


def _checked_images(images: np.ndarray, what: str) -> np.ndarray:
    """Images [N, H, W, C], C in ``CHANNELS``, uint8 or finite floats in [0, 1]: uint8 or float32."""
    if images.ndim != 4 or images.shape[-1] not in CHANNELS or not len(images):
        hint = " (add a channel axis: images[..., None])" if images.ndim == 3 else ""
        raise ImageFileError(f"{what} must be [N, H, W, C] with N > 0 and C in {CHANNELS}, "
                             f"got shape {images.shape}{hint}")
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise ImageFileError(f"{what} must be uint8 (0 to 255) or float in [0, 1], got {images.dtype}")
    if not np.isfinite(images).all():
        raise ImageFileError(f"{what} hold {int((~np.isfinite(images)).sum())} values that are not finite")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ImageFileError(f"{what} span [{low:g}, {high:g}], outside [0, 1] (uint8 images "
                             "are read as 0 to 255; floats must be scaled to [0, 1])")
    return images.astype(np.float32)


def _checked_labels(labels: np.ndarray, num_images: int, what: str) -> np.ndarray:
    """Labels [N]: integers >= 0, one per image; as int32."""
    if labels.ndim != 1 or len(labels) != num_images:
        raise ImageFileError(f"{what} must be [N] with one label per image ({num_images}), "
                             f"got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ImageFileError(f"{what} must be integers (class 0, 1, ...), got {labels.dtype}")
    if len(labels) and int(labels.min()) < 0:
        raise ImageFileError(f"{what} hold {int(labels.min())}; classes are numbered from 0")
    if len(labels) and int(labels.max()) >= np.iinfo(np.int32).max:
        raise ImageFileError(f"{what} hold {int(labels.max())}; classes are numbered 0, 1, ...")
    return labels.astype(np.int32)


# ----------------------------------------------------------------------------- folder


def read_folder(path: str) -> ImageArrays:
    """The images of a folder of class folders (module docstring), checked; no test split.

    Args:
      path: the folder holding one subfolder per class.

    Raises:
      ImageFileError: no class folder, an empty class, an unreadable image, an image of
        another size than the others or of more than 8 bits a channel.
    """
    if not os.path.isdir(path):
        raise ImageFileError(f"{path}: no such folder (data.dir names the folder of class folders "
                             "of the folder source)")
    classes = sorted(name for name in os.listdir(path)
                     if not name.startswith(".") and os.path.isdir(os.path.join(path, name)))
    if not classes:
        raise ImageFileError(f"{path}: no class folders in it (one subfolder of images per class)")
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(path, name)
        found = sorted(f for f in os.listdir(folder)
                       if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
        if not found:
            raise ImageFileError(f"{folder}: class {label} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        files += [os.path.join(folder, f) for f in found]
        labels += [label] * len(found)
    pictures = [_read_image(f) for f in files]  # [H, W] or [H, W, 3] uint8 each
    first = files[0]
    for file, picture in zip(files, pictures, strict=True):
        if picture.shape[:2] != pictures[0].shape[:2]:
            raise ImageFileError(
                f"{file}: {_size(picture)} pixels, but {first} is {_size(pictures[0])}; images are "
                "not resized: give every image one size")
    colour = any(p.ndim == 3 for p in pictures)
    images = np.stack([np.repeat(p[..., None], 3, -1) if colour and p.ndim == 2
                       else p if colour else p[..., None] for p in pictures])  # [N, H, W, C]
    return ImageArrays(images, np.asarray(labels, np.int32), None, None, len(classes))


def _read_image(file: str) -> np.ndarray:
    """One image file: [H, W] uint8 (grey) or [H, W, 3] uint8 (colour)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.load()
            mode = image.mode
            picture = (None if mode in DEEP_MODES
                       else np.asarray(image.convert("L" if mode in GREY_MODES else "RGB")))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageFileError(f"{file}: cannot read it as an image ({err})") from None
    if picture is None:
        raise ImageFileError(f"{file}: {mode} pixels (16 or 32 bits); only 8-bit images are read: "
                             "save it with 8 bits a channel")
    return picture


def _size(picture: np.ndarray) -> str:
    return f"{picture.shape[1]}x{picture.shape[0]}"
