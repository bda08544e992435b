"""Images in: any file Pillow reads, turned into the batch a model expects.

A weights file describes its preprocessing (``metadata['preprocessing']``)::

    {"color": "RGB" | "BGR",       channel order the network expects
     "scale": 1/255 or 1.0,        pixel values [0, 255] are multiplied by this
     "mean": [m0, m1, m2],         subtracted per channel, in the network's order
     "std": [s0, s1, s2],          then divided
     "resize": 256 or null,        shorter side resized to this (aspect kept)
     "crop": 224 or null,          then a center crop of this size
     "input_size": [H, W]}         what the network is fed

so that ``x = (pixels * scale - mean) / std`` per channel. Without resize and
crop, an image whose size differs from ``input_size`` is resized to it.
"""
import numpy as np
from PIL import Image, ImageOps

DEFAULT_PREPROCESSING = {"color": "RGB", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                         "std": [0.229, 0.224, 0.225], "resize": 256, "crop": 224,
                         "input_size": [224, 224]}


def load_image(path):
    """Read an image file as an RGB uint8 array (H, W, 3).

    EXIF orientation is applied; grayscale is replicated to three channels;
    16-bit and float images are scaled to 8 bits by their range; transparent
    pixels are composited onto white.
    """
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise FileNotFoundError(f"image {str(path)!r} does not exist") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: Pillow cannot read this image ({error})") from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        if image.mode == "F":
            top = max(float(values.max()), 1e-12)
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _resize(pixels, size):
    """Bilinear resize of an uint8 (H, W, 3) array to (height, width)."""
    height, width = size
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))


def fit_to_input(pixels, spec):
    """Resize and center-crop an RGB uint8 image as the spec says."""
    h, w = pixels.shape[:2]
    target = tuple(spec["input_size"])
    if spec.get("resize"):
        short = int(spec["resize"])
        scale = short / min(h, w)
        pixels = _resize(pixels, (max(short, round(h * scale)), max(short, round(w * scale))))
    if spec.get("crop"):
        crop = int(spec["crop"])
        h, w = pixels.shape[:2]
        if h < crop or w < crop:
            pixels = _resize(pixels, (max(h, crop), max(w, crop)))
            h, w = pixels.shape[:2]
        top, left = (h - crop) // 2, (w - crop) // 2
        pixels = pixels[top:top + crop, left:left + crop]
    if pixels.shape[:2] != target:
        pixels = _resize(pixels, target)
    return pixels


def normalize(pixels, spec):
    """RGB uint8 (H, W, 3) -> float32 (3, H, W) in the network's input space."""
    x = pixels.astype(np.float32)
    if spec.get("color", "RGB") == "BGR":
        x = x[:, :, ::-1]
    x = x * np.float32(spec.get("scale", 1.0))
    x = (x - np.asarray(spec.get("mean", [0, 0, 0]), np.float32)) / np.asarray(
        spec.get("std", [1, 1, 1]), np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def denormalize(x, spec):
    """Inverse of :func:`normalize`: float (3, H, W) -> RGB uint8 (H, W, 3), clipped."""
    x = np.asarray(x, dtype=np.float64).transpose(1, 2, 0)
    x = x * np.asarray(spec.get("std", [1, 1, 1])) + np.asarray(spec.get("mean", [0, 0, 0]))
    x = x / spec.get("scale", 1.0)
    if spec.get("color", "RGB") == "BGR":
        x = x[:, :, ::-1]
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def preprocess(pixels, spec):
    """One RGB uint8 image -> float32 (3, H, W) ready for the network."""
    return normalize(fit_to_input(pixels, spec), spec)


def load_batch(paths, spec):
    """Read and preprocess image files into one float32 NCHW batch."""
    return np.stack([preprocess(load_image(p), spec) for p in paths])
