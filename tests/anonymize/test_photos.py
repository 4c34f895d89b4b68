"""Photo anonymization on the real photos in ../shared/data/photos."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from ciagan_jax.anonymize import command, crops, identity, metadata, photos
from ciagan_jax.data import image_io

# dlib HOG (upsample 1) counts documented in ../shared/data/README.md.
KNOWN_COUNTS = {"two_people.jpg": 2, "obama_and_biden.jpg": 3, "obama-480p.jpg": 1}


@pytest.fixture(scope="module")
def detected(photos_dir, analyzer):
    """{name: (image, [FaceTarget])} for every shared photo (detected once)."""
    out = {}
    for path in sorted(photos_dir.glob("*.jpg")):
        img = image_io.load_rgb(path)
        out[path.name] = (img, photos.detect_targets(analyzer, img))
    return out


def _fresh(targets):
    return [photos.FaceTarget(t.box, None if t.landmarks is None else t.landmarks.copy())
            for t in targets]


def _polygon_mask(shape, lm, erode=0):
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(crops.face_polygon(lm)).astype(np.int32)], 1)
    if erode:
        m = cv2.erode(m, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return m.astype(bool)


def _allowed_region(shape, targets):
    """Independent bound on where pixels may change: each face polygon's box, generously grown."""
    allowed = np.zeros(shape[:2], bool)
    for t in targets:
        r = crops.feather_radius(float(t.landmarks[42, 0] - t.landmarks[39, 0]))
        poly = crops.face_polygon(t.landmarks)
        x0, y0 = np.floor(poly.min(0)).astype(int) - 3 * r - 2
        x1, y1 = np.ceil(poly.max(0)).astype(int) + 3 * r + 2
        allowed[max(y0, 0):y1, max(x0, 0):x1] = True
    return allowed


def test_every_detected_face_is_replaced_and_pixels_outside_masks_are_identical(
        detected, smoke_model):
    replacer = photos.FaceReplacer(smoke_model)
    assigner = identity.IdentityAssigner(identity.IdentityChooser("next", smoke_model.num_identities))
    for name, (img, targets) in detected.items():
        if name in KNOWN_COUNTS:
            assert len(targets) == KNOWN_COUNTS[name], name
        assert targets, f"{name}: dlib found no face"
        out, res = replacer.replace(img, _fresh(targets), assigner)
        assert [f.status for f in res.faces] == ["generated"] * len(targets), (name, res.faces)
        changed_px = np.any(out != img, axis=-1)
        # Outside the reported mask nothing moved, and the mask itself stays near the faces.
        assert not np.any(changed_px & ~res.changed), name
        assert not np.any(res.changed & ~_allowed_region(img.shape, targets)), name
        for t in targets:
            inside = _polygon_mask(img.shape, t.landmarks, erode=2)
            diff = np.abs(out[inside].astype(np.int32) - img[inside]).mean()
            assert diff > 8.0, f"{name}: face at {t.box} barely changed (mean |diff| {diff:.1f})"


def test_face_with_failed_landmarks_falls_back_and_is_hidden(detected, smoke_model):
    img, targets = detected["two_people.jpg"]
    faces = _fresh(targets)
    # Swapped inner eye corners: a crop cannot be built (mirror/profile failure).
    faces[0].landmarks[[39, 42]] = faces[0].landmarks[[42, 39]]
    faces[1].landmarks = None  # predictor gave nothing
    for mode in ("blur", "mask"):
        replacer = photos.FaceReplacer(smoke_model, fallback_mode=mode)
        out, res = replacer.replace(img, _fresh(faces), assigner=None)
        assert res.fell_back == 2 and res.generated == 0
        assert all(f.reason for f in res.faces)
        for t in targets:
            inside = _polygon_mask(img.shape, t.landmarks, erode=2)
            assert np.abs(out[inside].astype(np.int32) - img[inside]).mean() > 5.0, mode
        assert not np.any(np.any(out != img, axis=-1) & ~res.changed)


def test_face_too_small_for_generation_falls_back(detected, smoke_model):
    img, targets = detected["obama-480p.jpg"]
    replacer = photos.FaceReplacer(smoke_model, min_eye_distance=10_000)
    out, res = replacer.replace(img, _fresh(targets), assigner=None)
    assert [f.reason for f in res.faces] == ["face too small"]
    inside = _polygon_mask(img.shape, targets[0].landmarks, erode=2)
    assert np.abs(out[inside].astype(np.int32) - img[inside]).mean() > 5.0


def test_same_person_gets_same_fake_identity_across_photos_with_mapping_file(
        detected, smoke_model, tmp_path):
    n_ids = smoke_model.num_identities
    path = str(tmp_path / "mapping.json")
    replacer = photos.FaceReplacer(smoke_model)

    mapping = identity.IdentityMapping(identity.IdentityChooser("next", n_ids), path)
    img, targets = detected["obama-480p.jpg"]
    _, res = replacer.replace(img, _fresh(targets), identity.IdentityAssigner(mapping.chooser, mapping))
    first = res.faces[0].identity
    mapping.save()

    # A new run reads the file: Obama again gets his identity even though the
    # `next` counter has moved on; Biden is a new person with a new identity.
    mapping2 = identity.IdentityMapping(identity.IdentityChooser("next", n_ids), path)
    assigner2 = identity.IdentityAssigner(mapping2.chooser, mapping2)
    img, targets = detected["obama_small.jpg"]
    _, res = replacer.replace(img, _fresh(targets), assigner2)
    assert res.faces[0].identity == first
    img, targets = detected["biden.jpg"]
    _, res = replacer.replace(img, _fresh(targets), assigner2)
    assert res.faces[0].identity != first
    assert len(mapping2.identities) == 2

    # --new-mapping ignores what the file holds.
    assert identity.IdentityMapping(identity.IdentityChooser("next", n_ids), path, new=True).identities == []


def _jpeg_with_private_metadata(img: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x8298] = "(c) someone"  # Copyright
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (52.0, 31.0, 0.0)  # GPS latitude
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=92, exif=exif.tobytes(),
                              icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    return buf.getvalue()


def test_metadata_is_stripped_by_default_and_only_safe_fields_kept_on_request(tmp_path, photos_dir):
    img = image_io.load_rgb(photos_dir / "obama_small.jpg")
    src = tmp_path / "src.jpg"
    src.write_bytes(_jpeg_with_private_metadata(img))
    assert len(Image.open(src).getexif()) > 0
    metadata.save_photo(img, str(src), str(tmp_path / "plain.jpg"))
    metadata.save_photo(img, str(src), str(tmp_path / "kept.jpg"), keep_metadata=True)
    plain, kept = Image.open(tmp_path / "plain.jpg"), Image.open(tmp_path / "kept.jpg")
    assert plain.format == "JPEG" and "exif" not in plain.info and len(plain.getexif()) == 0
    assert plain.info.get("icc_profile") == Image.open(src).info["icc_profile"]
    assert dict(kept.getexif()) == {0x8298: "(c) someone"}
    assert not kept.getexif().get_ifd(0x8825)


def test_folder_run_mirrors_tree_strips_exif_and_skips_corrupt_file(
        photos_dir, smoke_setup, detected, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    img, targets = detected["two_people.jpg"]
    (src / "a.jpg").write_bytes(_jpeg_with_private_metadata(img))
    small, small_targets = detected["obama_small.jpg"]
    Image.fromarray(small).save(src / "sub" / "b.png")
    good = (photos_dir / "biden.jpg").read_bytes()
    (src / "sub" / "broken.jpg").write_bytes(good[:len(good) // 3])  # truncated JPEG
    (src / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    rc = command.main([str(src), "--model", str(smoke_setup[2]), "-o", str(out),
                       "--report", str(tmp_path / "report.json"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.jpg", "sub/b.png"]
    assert "broken.jpg" in err and "Traceback" not in err
    a = Image.open(out / "a.jpg")
    assert a.format == "JPEG" and len(a.getexif()) == 0 and "exif" not in a.info
    # PNG is lossless: the file itself is bit-identical away from the face.
    b = np.asarray(Image.open(out / "sub" / "b.png").convert("RGB"))
    moved = np.any(b != small, axis=-1)
    assert moved.any() and not np.any(moved & ~_allowed_region(small.shape, small_targets))
    report = json.loads((tmp_path / "report.json").read_text())
    by_name = {f["input"].split("/")[-1]: f for f in report["files"]}
    assert by_name["a.jpg"]["faces_found"] == 2 and by_name["a.jpg"]["generated"] == 2
    assert by_name["broken.jpg"]["error"] and by_name["b.png"]["fell_back"] == 0
    assert report["totals"]["errors"] == 1
