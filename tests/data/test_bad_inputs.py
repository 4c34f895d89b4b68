"""Every bad-input case is either handled (converted / rotated) or listed with a reason.

The bad files are made here from a real face photo (../shared/data/photos).
"""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest
from PIL import Image

from ciagan_jax.data import preprocess as pp
from ciagan_jax.data.faces import FaceAnalyzer
from ciagan_jax.data.image_io import ImageLoadError, load_rgb

FACE = "obama-480p.jpg"


@pytest.fixture(scope="module")
def bad_folder(shared_data, tmp_path_factory) -> pathlib.Path:
    """A flat folder holding one file per bad-input case plus the original."""
    d = tmp_path_factory.mktemp("bad_inputs")
    src = shared_data / "photos" / FACE
    data = src.read_bytes()
    rgb = np.asarray(Image.open(src).convert("RGB"))
    (d / "original.jpg").write_bytes(data)
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "not_an_image.jpg").write_text("this is a text file, not a JPEG\n")
    (d / "empty.jpg").write_bytes(b"")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    Image.fromarray(rgb).convert("L").save(d / "grey.jpg", quality=95)
    grey16 = (np.asarray(Image.fromarray(rgb).convert("L")).astype(np.uint16) * 257)
    cv2.imwrite(str(d / "grey16.png"), grey16)  # 16-bit greyscale PNG
    cv2.imwrite(str(d / "rgb16.png"), (rgb[..., ::-1].astype(np.uint16) * 257))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0  # a transparent corner
    Image.fromarray(rgba).save(d / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(d / "palette.png")
    # Pixels stored rotated 90 degrees counter-clockwise; EXIF orientation 6
    # tells viewers to turn them 90 degrees clockwise back upright.
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(d / "exif_rotated.jpg", quality=95, exif=exif.tobytes())
    Image.fromarray(rgb).resize((20, 20)).save(d / "tiny.jpg")
    yy, xx = np.mgrid[0:240, 0:320]
    gradient = np.dstack([xx * 255 // 320, yy * 255 // 240, np.full_like(xx, 128)]).astype(np.uint8)
    Image.fromarray(gradient).save(d / "no_face.jpg")
    return d


def test_truncated_jpeg_is_a_typed_error(bad_folder):
    with pytest.raises(ImageLoadError) as e:
        load_rgb(bad_folder / "truncated.jpg")
    assert e.value.reason == "truncated image data"


def test_text_file_named_jpg_is_not_an_image(bad_folder):
    with pytest.raises(ImageLoadError, match="not an image"):
        load_rgb(bad_folder / "not_an_image.jpg")
    with pytest.raises(ImageLoadError, match="empty file"):
        load_rgb(bad_folder / "empty.jpg")


def test_tiny_photo_is_rejected_with_its_size(bad_folder):
    with pytest.raises(ImageLoadError, match=r"too small \(20x20"):
        load_rgb(bad_folder / "tiny.jpg")


@pytest.mark.parametrize("name,tol", [("cmyk.jpg", 12), ("grey.jpg", 60), ("grey16.png", 60),
                                      ("rgb16.png", 1), ("palette.png", 20)])
def test_colour_modes_become_rgb_uint8(bad_folder, name, tol):
    ref = load_rgb(bad_folder / "original.jpg").astype(np.float32)
    img = load_rgb(bad_folder / name)
    assert img.dtype == np.uint8 and img.shape == ref.shape
    assert np.abs(img.astype(np.float32) - ref).mean() < tol
    if name.startswith("grey"):
        assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def test_rgba_transparent_pixels_become_white(bad_folder):
    img = load_rgb(bad_folder / "rgba.png")
    assert img.shape[2] == 3 and np.all(img[:40, :40] == 255)
    ref = load_rgb(bad_folder / "original.jpg")
    assert np.abs(img[50:, 50:].astype(int) - ref[50:, 50:]).mean() < 1


def test_exif_rotation_is_applied_and_face_is_found(bad_folder):
    ref = load_rgb(bad_folder / "original.jpg")
    img = load_rgb(bad_folder / "exif_rotated.jpg")
    assert img.shape == ref.shape  # upright again (stored pixels are W x H)
    assert np.abs(img.astype(np.float32) - ref).mean() < 6
    stored = np.asarray(Image.open(bad_folder / "exif_rotated.jpg").convert("RGB"))
    assert stored.shape == (ref.shape[1], ref.shape[0], 3)  # the file really is stored rotated
    face, _ = FaceAnalyzer().detect_largest(img)
    assert face is not None


def test_flat_run_lists_every_bad_file_with_reason(bad_folder, tmp_path):
    cfg = pp.Config(input=str(bad_folder), layout="flat")
    manifest = pp.preprocess(cfg, str(tmp_path / "out"), workers=1, progress=False)
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {
        "truncated.jpg": "truncated image data",
        "not_an_image.jpg": "not an image (format not recognised)",
        "empty.jpg": "empty file",
        "tiny.jpg": "too small (20x20 px, need >= 32 px)",
        "no_face.jpg": "no face found",
    }
    assert manifest["photos_without_face"] == 1
    # Flat layout: everything is in the test split, unlabelled.
    import tensorflow_datasets as tfds

    from ciagan_jax.data import records

    ds = tfds.builder_from_directory(records.builder_dir(tmp_path / "out")).as_dataset(split="test")
    got = sorted(ex["source_file"].decode() for ex in tfds.as_numpy(ds))
    assert got == sorted(["original.jpg", "cmyk.jpg", "grey.jpg", "grey16.png", "rgb16.png", "rgba.png",
                          "palette.png", "exif_rotated.jpg"])
    assert manifest["splits"]["test"]["records"] == 8 and manifest["splits"]["train"]["records"] == 0
    for ex in tfds.as_numpy(ds):
        assert ex["identity"] == -1
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["num_skipped"] == 5


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_path_applies_every_exif_orientation_like_pil(tmp_path, orientation):
    """16-bit colour photos bypass PIL's pixels; their EXIF rotation must match PIL's."""
    from ciagan_jax.data.image_io import _apply_same_transpose

    pixels = np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=100)
    with Image.open(path) as img:
        from PIL import ImageOps

        upright = ImageOps.exif_transpose(img)
        want_shape = np.asarray(upright).shape
        got = _apply_same_transpose(img, upright, pixels)
        ops = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
        want = pixels if ops[orientation] is None else np.asarray(Image.fromarray(pixels).transpose(ops[orientation]))
    assert got.shape == want_shape
    np.testing.assert_array_equal(got, want)
