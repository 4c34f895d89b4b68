"""Our preprocessing against the official release's own landmark and mask images.

Reference: ../shared/data/celeba_sample_release/{lndm,msk}/0/*.jpg, the images
the release (dvl-tum/ciagan) published for the 30 photos of
celeba_sample/0: 178 x 218 JPEGs, lndm = blue 1-px lines on white, msk =
black face region on white.

Metrics (both on the images thresholded at luma < 128, which keeps the
JPEGs' lines and region at full resolution):
- mask IoU: |ours & release| / |ours | release| of the black regions;
- landmark-line chamfer: symmetric mean distance in pixels between the line
  pixels of the two landmark images, i.e. the mean of (mean distance from
  each of our line pixels to the nearest release line pixel) and (the same
  from the release's to ours); 0 when the lines are the same pixels.
"""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

IDENTITY = "0"
MIN_IOU = 0.95
MAX_CHAMFER_PX = 0.5
MIN_PASSING = 0.95


@pytest.fixture(scope="module")
def release_dirs(shared_data) -> tuple[pathlib.Path, pathlib.Path]:
    rel = shared_data / "celeba_sample_release"
    if not (rel / "lndm" / IDENTITY).is_dir() or not (rel / "msk" / IDENTITY).is_dir():
        pytest.skip(f"the release's landmark/mask images not found at {rel}/{{lndm,msk}}/{IDENTITY} "
                    "(../shared/data/celeba_sample_release)")
    return shared_data / "celeba_sample" / IDENTITY, rel


def _dark(img: np.ndarray) -> np.ndarray:
    """Line / region pixels: luma < 128 (grey input, or RGB as stored by cv2: BGR)."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img < 128


def _read_dark(path: pathlib.Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert img is not None, f"cannot read {path}"
    return img < 128


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def line_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean distance (px) between the True pixels of a and b."""
    if not a.any() or not b.any():
        return float("inf")
    # distanceTransform: distance of every pixel to the nearest zero pixel.
    to_a = cv2.distanceTransform((~a).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    to_b = cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return float(0.5 * (to_b[a].mean() + to_a[b].mean()))


def test_line_chamfer_is_zero_for_same_lines_and_counts_offsets():
    a = np.zeros((20, 20), bool)
    a[5, 2:18] = True
    assert line_chamfer(a, a) == 0.0
    b = np.roll(a, 2, axis=0)  # the same line 2 px lower
    assert abs(line_chamfer(a, b) - 2.0) < 1e-6
    assert mask_iou(a, a) == 1.0 and mask_iou(a, b) == 0.0


def test_aligned_preprocessing_reproduces_release_landmark_and_mask_images(release_dirs):
    """>= 95 % of the 30 photos: mask IoU >= 0.95 and line chamfer <= 0.5 px.

    Runs the preprocessing's own per-photo step (detection, landmarks, the
    aligned-mode drawing) exactly as `preprocess --layout folders --aligned`
    does, and compares what it would write to the release's images.
    """
    from ciagan_jax.data import preprocess as pp
    from ciagan_jax.data.faces import FaceAnalyzer

    photos_dir, rel = release_dirs
    photos = sorted(photos_dir.glob("*.jpg"))
    assert len(photos) == 30
    analyzer = FaceAnalyzer("hog", 1)  # the release's detector settings
    rows = []
    for path in photos:
        recs, note = pp.process_photo(analyzer, str(path), all_faces=False, aligned=True)
        if not recs:
            rows.append((path.name, 0.0, float("inf"), note.get("reason")))
            continue
        rec = recs[0]
        iou = mask_iou(_dark(rec["mask_image"]), _read_dark(rel / "msk" / IDENTITY / path.name))
        cham = line_chamfer(_dark(rec["landmarks_image"]), _read_dark(rel / "lndm" / IDENTITY / path.name))
        rows.append((path.name, iou, cham, None))
    ious = np.array([r[1] for r in rows])
    chams = np.array([r[2] for r in rows])
    passing = (ious >= MIN_IOU) & (chams <= MAX_CHAMFER_PX)
    report = "\n".join(f"{n}: IoU {i:.3f} chamfer {c:.2f}" + (f" ({why})" if why else "")
                       for n, i, c, why in rows)
    assert passing.mean() >= MIN_PASSING, (
        f"{passing.sum()}/{len(rows)} photos within IoU >= {MIN_IOU} and chamfer <= {MAX_CHAMFER_PX} px "
        f"(IoU mean {ious.mean():.3f}, chamfer mean {np.mean(chams[np.isfinite(chams)]):.2f} px):\n{report}")


def test_detection_box_is_the_releases_single_upsample_1_pass(release_dirs):
    """Both labelled-photo rules fit landmarks in the box of the release's `detector(img, 1)[0]`."""
    import dlib

    from ciagan_jax.data.faces import FaceAnalyzer
    from ciagan_jax.data.image_io import load_rgb

    photos_dir, _ = release_dirs
    analyzer = FaceAnalyzer("hog", 1)
    detector = dlib.get_frontal_face_detector()
    for path in sorted(photos_dir.glob("*.jpg"))[:10]:
        img = load_rgb(path)
        r = detector(img, 1)[0]
        want = (float(r.left()), float(r.top()), float(r.right()), float(r.bottom()))
        first, _ = analyzer.detect_first(img)
        largest, _ = analyzer.detect_largest(img)
        assert first.box == want and largest.box == want, path.name
        np.testing.assert_array_equal(first.landmarks, largest.landmarks)
