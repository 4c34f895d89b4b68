"""Writing anonymized photos without the metadata that could identify anyone.

By default only the pixels and the ICC colour profile are written: no EXIF
(GPS, camera, serial numbers, dates), no embedded thumbnails (which would
still show the original face), no XMP/IPTC/comments/PNG text. With
`keep_metadata=True` a short list of harmless EXIF fields is copied (below);
orientation is never copied because the pixels are already upright.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

# EXIF tags (IFD0) that say nothing about who, where or with what camera.
SAFE_EXIF_TAGS = {
    0x011A: "XResolution",
    0x011B: "YResolution",
    0x0128: "ResolutionUnit",
    0x8298: "Copyright",
}
JPEG_QUALITY = 95


def source_info(path: str) -> tuple[str | None, bytes | None, Image.Exif | None, tuple | None]:
    """(PIL format name, ICC profile, EXIF, dpi) of a photo file, without decoding pixels."""
    with Image.open(path) as img:
        return img.format, img.info.get("icc_profile"), img.getexif(), img.info.get("dpi")


def save_photo(pixels: np.ndarray, src_path: str, dst_path: str, *, keep_metadata: bool = False,
               jpeg_quality: int = JPEG_QUALITY) -> None:
    """Writes (H, W, 3) uint8 RGB `pixels` in the source's format, metadata stripped.

    The format follows `src_path` (JPEG stays JPEG at `jpeg_quality` with
    4:4:4 chroma, PNG stays PNG, ...); formats PIL cannot write fall back to
    the format of `dst_path`'s extension. The ICC profile is kept.
    """
    fmt, icc, exif, dpi = source_info(src_path)
    img = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    params: dict = {}
    if icc:
        params["icc_profile"] = icc
    if keep_metadata:
        safe = Image.Exif()
        for tag in SAFE_EXIF_TAGS:
            if exif is not None and tag in exif:
                safe[tag] = exif[tag]
        if len(safe):
            params["exif"] = safe.tobytes()
        if dpi:
            params["dpi"] = dpi
    fmt = (fmt or "").upper()
    if fmt in ("JPEG", "MPO"):
        fmt = "JPEG"
        params.update(quality=int(jpeg_quality), subsampling=0)
    elif fmt == "WEBP":
        params.update(lossless=True)
    elif fmt not in ("PNG", "TIFF", "BMP"):
        fmt = None  # let PIL choose from the extension
    os.makedirs(os.path.dirname(os.path.abspath(dst_path)) or ".", exist_ok=True)
    tmp = dst_path + ".part"
    img.save(tmp, format=fmt or Image.registered_extensions().get(
        os.path.splitext(dst_path)[1].lower(), "PNG"), **params)
    os.replace(tmp, dst_path)
