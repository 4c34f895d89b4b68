"""Per-file results, the closing summary line and --report JSON."""

from __future__ import annotations

import dataclasses

# FileReport.status values.
ANONYMIZED = "anonymized"
SKIPPED_EXISTING = "skipped-existing"  # a complete output was already there (no --overwrite)
ERROR = "error"  # the input was skipped; `error` says why


@dataclasses.dataclass
class FileReport:
    """What happened to one input file (counts are faces; for video, face-frames).

    `status` is "anonymized", "skipped-existing" or "error" (derived from
    `error` when left empty). Video only: `bridged` counts the face-frames
    (among `faces_found`) that were covered by bridging - landmark
    following over frames the detector missed them on, backwards from a
    late detection, or interpolation inside a short gap - rather than by a
    detection or tracking between detections; `scene_cuts` and
    `detector_frames` (frames the detector ran on) describe the analysis.
    """

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
    status: str = ""
    bridged: int | None = None
    scene_cuts: int | None = None
    detector_frames: int | None = None
    # Smallest face (detector box side, px) the detection could see in this
    # file: faces at least this large were searched for everywhere.
    min_face_px: float | None = None

    def final_status(self) -> str:
        if self.error is not None:
            return ERROR
        return self.status or ANONYMIZED


def summary_line(files: list[FileReport]) -> str:
    done = [f for f in files if f.final_status() == ANONYMIZED]
    existing = sum(f.final_status() == SKIPPED_EXISTING for f in files)
    bad = sum(f.final_status() == ERROR for f in files)
    found = sum(f.faces_found for f in done)
    gen = sum(f.generated for f in done)
    fb = sum(f.fell_back for f in done)
    return (f"{len(done)} file(s) anonymized, {existing} already done (skipped-existing), "
            f"{bad} skipped with errors; faces found {found}, generated {gen}, fell back {fb}")


def write_report(path: str, files: list[FileReport], settings: dict,
                 exit_status: int | None = None) -> None:
    """Writes the JSON report atomically (a temporary file renamed into place)."""
    from ciagan_jax.anonymize import outputs  # pylint: disable=g-import-not-at-top

    rows = []
    for f in files:
        row = dataclasses.asdict(f)
        row["status"] = f.final_status()
        rows.append(row)
    obj = {
        "summary": summary_line(files),
        "exit_status": exit_status,
        "totals": {
            "files": len(files),
            "anonymized": sum(f.final_status() == ANONYMIZED for f in files),
            "skipped_existing": sum(f.final_status() == SKIPPED_EXISTING for f in files),
            "errors": sum(f.final_status() == ERROR for f in files),
            "faces_found": sum(f.faces_found for f in files),
            "generated": sum(f.generated for f in files),
            "fell_back": sum(f.fell_back for f in files),
            # Video face-frames covered by bridging (a subset of generated + fell back).
            "bridged": sum(f.bridged or 0 for f in files),
        },
        "skipped": [{"input": f.input, "error": f.error} for f in files if f.error is not None],
        "settings": settings,
        "files": rows,
    }
    outputs.write_json_atomic(path, obj, mode=outputs.default_file_mode(), indent=2)
