"""Images in: every mode Pillow reads becomes RGB, and preprocessing follows the spec."""
import numpy as np
import pytest
from PIL import Image

from minicnn.images import load_image, preprocess, normalize, denormalize, fit_to_input

SPEC = {"color": "RGB", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "resize": 256, "crop": 224, "input_size": [224, 224]}


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    rgb = load_image(tmp_path / "g.png")
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)


def test_sixteen_bit_is_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    rgb = load_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(rgb[:, :, 0], [[0, 255], [128, 1]])


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]          # opaque red stays red
    rgba[1, 1] = [0, 0, 255, 0]            # fully transparent blue becomes white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    rgb = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255                   # a white band on the left
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6                       # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "r.jpg", exif=exif, quality=95)
    rgb = load_image(tmp_path / "r.jpg")
    assert rgb.shape == (40, 20, 3)
    assert rgb[:10].mean() > 200 and rgb[-10:].mean() < 50   # the band is now on top


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_resize_then_center_crop():
    pixels = np.zeros((300, 600, 3), dtype=np.uint8)
    pixels[:, 290:310] = 255               # a vertical stripe in the middle
    out = fit_to_input(pixels, SPEC)
    assert out.shape == (224, 224, 3)      # shorter side 256, then 224 from the center
    assert out[:, 112].mean() > 200 and out[:, 0].mean() < 5


def test_normalize_matches_the_formula_and_inverts():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    x = normalize(pixels, SPEC)
    assert x.shape == (3, 5, 7) and x.dtype == np.float32
    expected = (pixels[:, :, 1] / 255.0 - 0.456) / 0.224
    np.testing.assert_allclose(x[1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(denormalize(x, SPEC), pixels)


def test_bgr_mean_subtraction_order():
    spec = {"color": "BGR", "scale": 1.0, "mean": [103.939, 116.779, 123.68],
            "std": [1, 1, 1], "input_size": [1, 1]}
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)   # R=10, G=20, B=30
    x = preprocess(pixel, spec)
    np.testing.assert_allclose(x[:, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)
    np.testing.assert_array_equal(denormalize(x, spec), pixel)
