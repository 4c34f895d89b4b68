"""Which fake identity each real face gets.

- `IdentityChooser`: `next` (a counter over the identities, as the release
  cycles target classes), `random` (a numpy generator seeded by --seed) or
  a fixed index.
- `IdentityMapping`: a JSON file that remembers, per real person (a dlib
  128-d face descriptor), the fake identity given to them, so one person
  gets one fake identity across a folder or a video. `--new-mapping` starts
  it afresh (the paper's per-camera rule).
- `FaceDescriber`: dlib's face-recognition network on our 68 landmarks.
"""

from __future__ import annotations

import json
import os

import numpy as np

# dlib's documented same-person threshold for its 128-d descriptors.
MATCH_THRESHOLD = 0.6
MAPPING_FORMAT = "ciagan_jax.identity_mapping"


class IdentityChooser:
    """Draws fake identities in [0, num_identities).

    `num_identities` is the model's trained one-hot slots
    (`num_trained_identities`): a slot that never received a gradient gives
    no face, so an explicit index outside them is refused.
    """

    def __init__(self, mode: str | int, num_identities: int, seed: int = 0):
        self.num_identities = int(num_identities)
        self._counter = 0
        self._rng = np.random.default_rng(seed)
        if isinstance(mode, str) and mode not in ("next", "random"):
            try:
                mode = int(mode)
            except ValueError as e:
                raise ValueError(f"--identity must be 'next', 'random' or an integer, got {mode!r}") from e
        if isinstance(mode, int) and not 0 <= mode < self.num_identities:
            raise ValueError(f"--identity {mode} is outside the model's trained identities "
                             f"[0, {self.num_identities}) (0..{self.num_identities - 1})")
        self.mode = mode

    def draw(self) -> int:
        if self.mode == "next":
            k = self._counter % self.num_identities
            self._counter += 1
            return k
        if self.mode == "random":
            return int(self._rng.integers(self.num_identities))
        return int(self.mode)


class FaceDescriber:
    """Lazily loaded dlib face-recognition model (face_recognition_models)."""

    def __init__(self):
        self._model = None

    def describe(self, img: np.ndarray, box, landmarks: np.ndarray) -> np.ndarray:
        """(128,) float32 descriptor of the face with `landmarks` in the uint8 RGB `img`."""
        import dlib  # pylint: disable=g-import-not-at-top

        if self._model is None:
            import face_recognition_models as frm  # pylint: disable=g-import-not-at-top

            self._model = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        pts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
        shape = dlib.full_object_detection(rect, pts)
        return np.asarray(self._model.compute_face_descriptor(img, shape, 0), np.float32)


class IdentityMapping:
    """Real person (descriptor) -> fake identity, optionally persisted as JSON.

    File: {"format", "version": 1, "num_identities", "threshold",
    "people": [{"identity", "descriptor": [128 floats], "count"}]}; the
    stored descriptor is the running mean over the faces matched to it.
    It holds biometric face descriptors of real people: `save` writes it
    with mode 0600, and `_load` rejects a malformed file with a message
    naming the file and the field.
    """

    def __init__(self, chooser: IdentityChooser, path: str | None = None, *,
                 new: bool = False, threshold: float = MATCH_THRESHOLD):
        self.chooser = chooser
        self.path = path
        self.threshold = threshold
        self.identities: list[int] = []
        self.descriptors = np.zeros((0, 128), np.float32)
        self.counts: list[int] = []
        if path and os.path.exists(path) and not new:
            self._load(path)

    def _load(self, path: str) -> None:
        """Reads and validates the file; a malformed one raises ValueError naming file and field."""
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable identity mapping ({e})") from e

        def bad(field: str, problem: str) -> ValueError:
            return ValueError(f"{path}: malformed identity mapping: field {field}: {problem} "
                              f"(fix the file, or use --new-mapping to start afresh)")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def kind(v) -> str:
            return type(v).__name__ if v is not None else "null"

        if not isinstance(obj, dict):
            raise bad("(top level)", f"expected a JSON object, got {kind(obj)}")
        if obj.get("format") != MAPPING_FORMAT:
            raise ValueError(f"{path}: not an identity mapping (field format is "
                             f"{obj.get('format')!r}, expected {MAPPING_FORMAT!r})")
        if obj.get("version") != 1 or not is_int(obj.get("version")):
            raise bad("version", f"expected 1, got {obj.get('version')!r}")
        n = obj.get("num_identities")
        if not is_int(n) or n <= 0:
            raise bad("num_identities", f"expected a positive integer, got {n!r}")
        if n != self.chooser.num_identities:
            raise ValueError(f"{path}: made for {n} identities, the model "
                             f"has {self.chooser.num_identities}; use --new-mapping")
        if "threshold" in obj and (not isinstance(obj["threshold"], (int, float))
                                   or isinstance(obj["threshold"], bool)
                                   or not np.isfinite(obj["threshold"]) or obj["threshold"] <= 0):
            raise bad("threshold", f"expected a positive number, got {obj['threshold']!r}")
        people = obj.get("people")
        if not isinstance(people, list):
            raise bad("people", f"expected a list, got {kind(people)}")
        identities, counts, descriptors = [], [], []
        for i, p in enumerate(people):
            where = f"people[{i}]"
            if not isinstance(p, dict):
                raise bad(where, f"expected an object, got {kind(p)}")
            k = p.get("identity")
            if not is_int(k) or not 0 <= k < n:
                raise bad(f"{where}.identity", f"expected an integer in [0, {n}), got {k!r}")
            c = p.get("count", 1)
            if not is_int(c) or c < 1:
                raise bad(f"{where}.count", f"expected a positive integer, got {c!r}")
            d = p.get("descriptor")
            if not isinstance(d, list):
                raise bad(f"{where}.descriptor", f"expected a list of 128 numbers, got {kind(d)}")
            if len(d) != 128:
                raise bad(f"{where}.descriptor", f"expected 128 numbers, got {len(d)}")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d):
                raise bad(f"{where}.descriptor", "expected numbers only")
            arr = np.asarray(d, np.float32)
            if not np.all(np.isfinite(arr)):
                raise bad(f"{where}.descriptor", "holds a non-finite number")
            identities.append(k)
            counts.append(c)
            descriptors.append(arr)
        self.identities = identities
        self.counts = counts
        self.descriptors = (np.stack(descriptors) if descriptors else np.zeros((0, 128), np.float32))
        # Continue the `next` counter after the identities already handed out.
        self.chooser._counter = len(people)  # pylint: disable=protected-access

    def lookup(self, descriptor: np.ndarray) -> int:
        """Fake identity of the person with `descriptor`; a new one when unseen."""
        d = np.asarray(descriptor, np.float32).reshape(128)
        if len(self.identities):
            dist = np.linalg.norm(self.descriptors - d, axis=1)
            i = int(np.argmin(dist))
            if dist[i] < self.threshold:
                n = self.counts[i]
                self.descriptors[i] = (self.descriptors[i] * n + d) / (n + 1)
                self.counts[i] = n + 1
                return self.identities[i]
        k = self.chooser.draw()
        self.identities.append(k)
        self.counts.append(1)
        self.descriptors = np.concatenate([self.descriptors, d[None]])
        return k

    def save(self) -> None:
        if not self.path:
            return
        obj = {
            "format": MAPPING_FORMAT, "version": 1,
            "num_identities": self.chooser.num_identities, "threshold": self.threshold,
            "people": [{"identity": k, "count": c, "descriptor": [round(float(v), 6) for v in d]}
                       for k, c, d in zip(self.identities, self.counts, self.descriptors)],
        }
        # Biometric data of real people: only the owner may read it (0600),
        # written through an exclusive mkstemp file and an atomic rename.
        from ciagan_jax.anonymize import outputs  # pylint: disable=g-import-not-at-top

        outputs.write_json_atomic(self.path, obj, mode=0o600)


class IdentityAssigner:
    """Per-face identity: from the mapping when one is used, else from the chooser."""

    def __init__(self, chooser: IdentityChooser, mapping: IdentityMapping | None = None,
                 describer: FaceDescriber | None = None):
        self.chooser = chooser
        self.mapping = mapping
        self.describer = describer or (FaceDescriber() if mapping is not None else None)

    def assign(self, img: np.ndarray, box, landmarks: np.ndarray) -> int:
        if self.mapping is None:
            return self.chooser.draw()
        return self.mapping.lookup(self.describer.describe(img, box, landmarks))
