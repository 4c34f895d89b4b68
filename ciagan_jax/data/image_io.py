"""Robust photo loading: any common photo file -> RGB uint8, or a typed error.

Every photo the preprocessing sees goes through `load_rgb`. It promises an
(H, W, 3) uint8 RGB array in the photo's upright orientation (EXIF orientation
applied), whatever the file's colour mode (CMYK, greyscale, 16-bit, RGBA,
palette), or raises `ImageLoadError` whose `reason` is a short, stable string
that the manifest lists (the run never stops on a bad file).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Faces need room: below this the 68-point model has nothing to work with.
MIN_SIDE_PX = 32
# Refuse absurd pixel counts instead of exhausting memory (PIL's own guard
# only warns below 2x its limit).
MAX_PIXELS = 250_000_000


class ImageLoadError(Exception):
    """A photo that cannot be used; `reason` is what the manifest records."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _to_uint8_rgb(img: Image.Image, path: str) -> np.ndarray:
    """Converts any PIL mode to an (H, W, 3) uint8 RGB array."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        # 16-bit greyscale comes as I;16 or as I (int32); both span 0..65535.
        arr = np.clip(arr.astype(np.float64) / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        hi = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent regions become white, the usual display convention,
        # rather than whatever colour the hidden pixels happen to hold.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        # CMYK, YCbCr, L, 1, P, LAB, HSV ...
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageLoadError(path, f"unsupported pixel format (mode {mode})")
    return np.ascontiguousarray(arr)


def _load_16bit_colour(path: str) -> np.ndarray | None:
    """PIL reads 16-bit-per-channel colour PNG/TIFF lossily or not at all; cv2 does not."""
    import cv2  # pylint: disable=g-import-not-at-top

    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    arr = (arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float64) / 255.0
        arr = (arr[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr[..., 2::-1])  # BGR -> RGB


def load_rgb(path: str | os.PathLike[str], *, min_side: int = MIN_SIDE_PX) -> np.ndarray:
    """Loads a photo as an upright (H, W, 3) uint8 RGB array.

    Raises:
      ImageLoadError: empty, unreadable, not an image, truncated/corrupt,
        smaller than `min_side` px on its shorter side, or too many pixels.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ImageLoadError(path, f"unreadable: {e.strerror or e}") from e
    if size == 0:
        raise ImageLoadError(path, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageLoadError(path, f"too large ({w}x{h} px)")
                if min(w, h) < min_side:
                    raise ImageLoadError(path, f"too small ({w}x{h} px, need >= {min_side} px)")
                img.load()  # decodes now, so truncation surfaces here
                mode = img.mode
                fmt = img.format
                # 16-bit colour (48/64-bit PNG): PIL hands back 8-bit RGB(A)
                # with the low byte only on some versions; use cv2 for it.
                bits16 = fmt in ("PNG", "TIFF") and mode in ("RGB", "RGBA") and (
                    img.info.get("bits", 8) == 16 or _png_bit_depth(path) == 16)
                upright = ImageOps.exif_transpose(img)
                if bits16:
                    arr = _load_16bit_colour(path)
                    if arr is not None:
                        # exif_transpose on the cv2 array: rotate as PIL did.
                        return _apply_same_transpose(img, upright, arr)
                return _to_uint8_rgb(upright, path)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageLoadError(path, "not an image (format not recognised)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(path, "too large (decompression bomb guard)") from e
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower() or "premature" in msg.lower():
            raise ImageLoadError(path, "truncated image data") from e
        raise ImageLoadError(path, f"corrupt or unreadable image: {msg}") from e
    except (ValueError, SyntaxError, MemoryError) as e:
        raise ImageLoadError(path, f"corrupt image: {e}") from e


def _png_bit_depth(path: str) -> int:
    """Bit depth from a PNG's IHDR chunk (byte 24), 0 when not a PNG."""
    with open(path, "rb") as f:
        head = f.read(25)
    if len(head) == 25 and head[:8] == b"\x89PNG\r\n\x1a\n":
        return head[24]
    return 0


def _apply_same_transpose(img: Image.Image, upright: Image.Image, arr: np.ndarray) -> np.ndarray:
    """Applies the EXIF orientation that `exif_transpose` applied to `img`."""
    orientation = img.getexif().get(0x0112, 1)
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.transpose(a, (1, 0, 2)),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.transpose(a, (1, 0, 2))[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    if upright is img or orientation not in ops:
        return arr
    return np.ascontiguousarray(ops[orientation](arr))
