"""Per-file results, the closing summary line and --report JSON."""

from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass
class FileReport:
    """What happened to one input file (counts are faces; for video, face-frames)."""

    input: str
    output: str | None
    kind: str  # "photo" or "video"
    faces_found: int = 0
    generated: int = 0
    fell_back: int = 0
    error: str | None = None
    frames: int | None = None
    tracks: int | None = None
    seconds: float = 0.0
    fallback_reasons: dict[str, int] = dataclasses.field(default_factory=dict)


def summary_line(files: list[FileReport]) -> str:
    ok = [f for f in files if f.error is None]
    bad = len(files) - len(ok)
    found = sum(f.faces_found for f in ok)
    gen = sum(f.generated for f in ok)
    fb = sum(f.fell_back for f in ok)
    return (f"{len(ok)} file(s) anonymized, {bad} skipped with errors; faces found {found}, "
            f"generated {gen}, fell back {fb}")


def write_report(path: str, files: list[FileReport], settings: dict) -> None:
    obj = {
        "summary": summary_line(files),
        "totals": {
            "files": len(files),
            "errors": sum(f.error is not None for f in files),
            "faces_found": sum(f.faces_found for f in files),
            "generated": sum(f.generated for f in files),
            "fell_back": sum(f.fell_back for f in files),
        },
        "settings": settings,
        "files": [dataclasses.asdict(f) for f in files],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
