"""Images to pour through a network: a folder, an array, or the model's own data.

Every source becomes a :class:`Dataset`: ``len``, the class names, the labels
(when known), ``batches(batch_size)`` yielding ``(x, labels)`` in the network's
input space (float32 NCHW, preprocessed as the weights file says), and
``pixels(i)``, image ``i`` as RGB uint8 (H, W, 3) at the network's input size
for figures. A folder is read batch by batch, never all at once.

* a folder of image files; class subfolders (``cat/0001.jpg``) name the labels,
  sorted, as torchvision's ImageFolder does, and loose files have no label;
* an array: NCHW float in the network's input space, or NHWC uint8 pixels;
* ``None``: the data that goes with the model. For the shipped digits model,
  scikit-learn's handwritten digits (bundled with it, offline) prepared the way
  ``weights/train_digits.py`` trained it, the held-out split by default.
"""
from pathlib import Path

import numpy as np

from .images import load_image, fit_to_input, normalize, denormalize

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
DIGITS_SOURCE = "sklearn.datasets.load_digits"


def digit_images():
    """scikit-learn's 1,797 8x8 digits as 32x32 RGB uint8 images (bilinear
    upsampling of 0..16 ink), with their labels."""
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    ink = np.round(digits.images * (255 / 16)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in ink])
    return np.repeat(big[:, :, :, None], 3, axis=3), digits.target


def digits_split(labels, seed=0):
    """The seeded, stratified 80/20 split the shipped model was trained with:
    (train indices, held-out indices)."""
    from sklearn.model_selection import train_test_split
    return train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels,
                            random_state=seed)


class Dataset:
    """Images with optional labels, preprocessed on the way out (see the module doc)."""

    def __init__(self, spec, count, read, labels=None, classes=None, description=""):
        self.spec = spec
        self._count = count
        self._read = read  # indices -> list of RGB uint8 images at the input size
        self.labels = None if labels is None else np.asarray(labels)
        self.classes = list(classes) if classes is not None else None
        self.description = description

    def __len__(self):
        return self._count

    def pixels(self, i):
        """Image ``i`` as RGB uint8 (H, W, 3), resized and cropped to the input size."""
        return self._read([i])[0]

    def images(self, indices):
        """Images ``indices`` in the network's input space, float32 NCHW."""
        return np.stack([normalize(p, self.spec) for p in self._read(list(indices))])

    def batches(self, batch_size=64, limit=None):
        """Yield ``(x, labels)`` (labels None when unknown) for the first ``limit`` images."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, received {batch_size}")
        stop = len(self) if limit is None else min(int(limit), len(self))
        for start in range(0, stop, batch_size):
            index = range(start, min(start + batch_size, stop))
            labels = None if self.labels is None else self.labels[list(index)]
            yield self.images(index), labels

    def subset(self, indices):
        """A dataset of the images ``indices`` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)
        return Dataset(self.spec, len(indices), lambda idx: self._read(list(indices[idx])),
                       None if self.labels is None else self.labels[indices], self.classes,
                       self.description)


def from_pixels(pixels, spec, labels=None, classes=None, description="an array of pixels"):
    """A dataset of RGB uint8 images (N, H, W, 3), fitted to the input size lazily."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be RGB uint8 of shape (N, H, W, 3), received "
                         f"{pixels.dtype} {pixels.shape}")
    return Dataset(spec, len(pixels), lambda idx: [fit_to_input(pixels[i], spec) for i in idx],
                   labels, classes, description)


def from_array(x, spec, labels=None, classes=None):
    """A dataset of a float NCHW batch already in the network's input space."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected an NCHW batch (N, C, H, W), received shape {x.shape}")
    if x.dtype == np.uint8 and x.shape[-1] == 3:
        return from_pixels(x, spec, labels, classes)
    return Dataset(spec, len(x), lambda idx: [denormalize(x[i], spec) for i in idx], labels,
                   classes, "an array")


def image_folder(folder, spec, classes=None):
    """The image files below ``folder``: one subfolder per class (labels from the
    sorted subfolder names, or from ``classes`` when given), or loose files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    names = [p.name for p in subfolders]
    paths, labels = [], []
    for label, sub in enumerate(subfolders):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if classes is not None:
            if sub.name not in classes:
                raise ValueError(f"{sub}: folder name {sub.name!r} is not one of the model's "
                                 f"classes ({', '.join(classes[:10])}...)")
            label = list(classes).index(sub.name)
        paths += files
        labels += [label] * len(files)
    loose = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose and paths:
        raise ValueError(f"{folder} holds both class subfolders and loose image files; put "
                         "the loose files in a subfolder or point at one class folder")
    if not paths and not loose:
        raise ValueError(f"{folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if loose:
        paths, labels = loose, None
    read = lambda idx: [fit_to_input(load_image(paths[i]), spec) for i in idx]  # noqa: E731
    dataset = Dataset(spec, len(paths), read, labels,
                      (classes or names) if labels is not None else classes, f"folder {folder}")
    dataset.paths = paths
    return dataset


def model_data(net, split="test"):
    """The data that goes with ``net``'s weights (only the shipped digits model has
    some offline); ``split`` 'test' (held out), 'train' or 'all'."""
    source = net.metadata.get("source") or {}
    if source.get("data") != DIGITS_SOURCE:
        raise ValueError("this model has no data that goes with it offline; give a folder of "
                         "images (class subfolders name the labels) or an array")
    images, labels = digit_images()
    train, test = digits_split(labels, int(source.get("seed", 0)))
    index = {"test": test, "train": train, "all": np.arange(len(labels))}.get(split)
    if index is None:
        raise ValueError(f"unknown split {split!r}: use 'test', 'train' or 'all'")
    return from_pixels(images[index], net.metadata["preprocessing"], labels[index],
                       net.metadata.get("labels"), f"scikit-learn digits ({split} split)")


def as_dataset(source, net, labels=None):
    """Any source (None, a folder, an array or a Dataset) as a :class:`Dataset`."""
    if isinstance(source, Dataset):
        return source
    if source is None:
        return model_data(net)
    if isinstance(source, (str, Path)):
        return image_folder(source, net.metadata["preprocessing"], net.metadata.get("labels"))
    return from_array(source, net.metadata["preprocessing"], labels, net.metadata.get("labels"))
