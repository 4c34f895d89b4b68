"""Faces in large photos and small faces are found and replaced (issue 16, part 1).

Real faces from ../shared/data/photos/multiface.jpg (six faces of about
90 px) are placed on large canvases: detecting a 4000 px photo on a 1024 px
copy alone misses them all.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from ciagan_jax.anonymize import command
from ciagan_jax.data import face_search, faces, image_io


@pytest.fixture(scope="module")
def group(photos_dir):
    path = photos_dir / "multiface.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return image_io.load_rgb(path)


def _canvas(face_img: np.ndarray, size: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    h, w = size
    canvas = np.full((h, w, 3), 120, np.uint8)
    y, x = at
    canvas[y:y + face_img.shape[0], x:x + face_img.shape[1]] = face_img
    return canvas


def _run(tmp_path, img, *extra, smoke_bundle):
    src = tmp_path / "in" / "photo.png"
    src.parent.mkdir()
    Image.fromarray(img).save(src)
    out, rep = tmp_path / "out", tmp_path / "report.json"
    code = command.main([str(src), "-o", str(out), "--model", str(smoke_bundle), "--quiet",
                         "--report", str(rep), *extra])
    assert code == 0
    return image_io.load_rgb(out / "photo.png"), json.loads(rep.read_text())["files"][0]


def _raw_faces(original, anonymized, boxes) -> list:
    """Boxes whose pixels came out (almost) unchanged."""
    raw = []
    for b in boxes:
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        x0, y0 = max(0, x0), max(0, y0)
        diff = np.abs(original[y0:y1, x0:x1].astype(int) - anonymized[y0:y1, x0:x1].astype(int))
        if diff.mean() < 4:
            raw.append(b)
    return raw


def test_faces_of_86px_in_a_4000px_photo_are_all_replaced(tmp_path, group, smoke_setup):
    # Across the fine pass's tile seam (x = 1883..2117 for this size).
    img = _canvas(group, (3000, 4000), (1200, 1400))
    # The truth: HOG on the full-resolution photo.
    truth = [b for b, _ in faces.FaceAnalyzer("hog", 1)._detect_rects(img, 0)]
    assert len(truth) == 6
    # What the old 1024-px detection saw: nothing.
    small = cv2.resize(img, (1024, 768), interpolation=cv2.INTER_AREA)
    assert faces.FaceAnalyzer("hog", 1)._detect_rects(small, 1) == []

    out, row = _run(tmp_path, img, smoke_bundle=smoke_setup[2])
    assert row["faces_found"] == 6 and row["generated"] + row["fell_back"] == 6
    assert row["min_face_px"] == face_search.default_min_face(3000, 4000) == 80
    assert _raw_faces(img, out, truth) == []


def test_22px_faces_are_found_with_min_face_20_and_hidden_never_left_raw(tmp_path, group, smoke_setup):
    quarter = cv2.resize(group, (group.shape[1] // 4, group.shape[0] // 4), interpolation=cv2.INTER_AREA)
    img = _canvas(quarter, (800, 1200), (300, 400))
    # The truth: HOG on the pasted region upscaled 4x (the whole canvas would cost seconds).
    y0, x0 = 280, 380
    region = img[y0:y0 + quarter.shape[0] + 40, x0:x0 + quarter.shape[1] + 40]
    up = cv2.resize(region, (region.shape[1] * 4, region.shape[0] * 4), interpolation=cv2.INTER_LINEAR)
    truth = [(x0 + b[0] / 4, y0 + b[1] / 4, x0 + b[2] / 4, y0 + b[3] / 4)
             for b, _ in faces.FaceAnalyzer("hog", 1)._detect_rects(up, 0)]
    assert len(truth) == 6

    out, row = _run(tmp_path, img, "--min-face", "20", smoke_bundle=smoke_setup[2])
    assert row["faces_found"] == 6 and row["min_face_px"] == 20
    # Too small to generate is hidden by the fallback and counted, never skipped.
    assert row["generated"] + row["fell_back"] == 6
    assert _raw_faces(img, out, truth) == []


def test_min_face_below_the_floor_is_a_usage_error(tmp_path, group, smoke_setup, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(group).save(src)
    code = command.main([str(src), "-o", str(tmp_path / "o"), "--model", str(smoke_setup[2]),
                         "--min-face", "5", "--quiet"])
    assert code == command.EXIT_USAGE
    assert "at least 20" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
