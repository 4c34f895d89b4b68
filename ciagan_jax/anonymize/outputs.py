"""Writing outputs so that no input can ever be destroyed, and runs can resume.

Three layers:

- `check_plan` (before anything is written): every path is compared by its
  real path (`os.path.realpath`, symlinks resolved). It refuses, with
  `UnsafeOutputError` (exit 2), an output folder that is an input folder or
  lies inside one, any destination that is, or reaches through a symlink,
  an input file or a place inside an input folder, two different inputs
  that would be written to one output, and `--mapping`/`--report` files
  that would land on an input or an output.
- `destination_state` (per file, before it is processed): "missing",
  "exists" (a complete earlier output: skipped unless --overwrite),
  "symlink" (the destination itself is a symlink: refused, never followed)
  or "unsafe-folder" (a folder on the way to it is a symlink that leads
  elsewhere: refused).
- `atomic_output` (the write): the writer works in a fresh private folder
  `.ciagan-partial-<pid>-<random>` (`tempfile.mkdtemp`: created exclusively,
  mode 0700, unpredictable name) beside the destination, so every temporary
  path it or a library under it (PIL, ffmpeg) opens is one nobody else can
  plant a symlink at. The finished file is fsynced and published under its
  final name in one atomic step: `os.link` (fails if something appeared
  there: never a silent replace) or, with --overwrite, `os.replace`; both
  replace/refuse a symlink at the destination instead of following it.
  Hence any file under a final output name is complete, and after a crash
  (even SIGKILL) only `.ciagan-partial-*` folders can be left over;
  `remove_stale_temps` deletes those whose process is gone, and folder
  walks never ingest them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from typing import Iterable, Iterator, Sequence

TEMP_PREFIX = ".ciagan-partial-"
_TEMP_RE = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")
# Temporary names of earlier versions ("clip.mp4.part.mp4", "a.jpg.part").
_OLD_PART_RE = re.compile(r"\.(jpe?g|png|bmp|tiff?|webp|mp4|mov|avi|mkv|webm|m4v)\.part(\.[a-z0-9]+)?$",
                          re.IGNORECASE)


class UnsafeOutputError(ValueError):
    """The run as asked could destroy an input or mix outputs up (exit 2, nothing written)."""


class OutputRefusedError(OSError):
    """One destination cannot be written safely; that input is skipped (exit 1)."""


def is_temp_name(name: str) -> bool:
    """True for temporary files/folders of this tool (current and earlier versions)."""
    return name.startswith(TEMP_PREFIX) or bool(_OLD_PART_RE.search(name))


def is_within(path: str, folder: str) -> bool:
    """`path` is `folder` or below it (both real, absolute paths)."""
    if path == folder:
        return True
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def expected_real(dst: str, root: str) -> str:
    """Where `dst` (a path under the output `root`) must really land: real(root)/relative part.

    When a folder between `root` and `dst`, or `dst` itself, is a symlink,
    `os.path.realpath(dst)` differs from this.
    """
    rel = os.path.relpath(os.path.abspath(dst), os.path.abspath(root))
    return os.path.normpath(os.path.join(os.path.realpath(root), rel))


def check_plan(jobs: Sequence[tuple[str, str, str]], inputs: Sequence[str], output: str, *,
               output_is_file: bool = False, extra_files: dict[str, str | None] | None = None
               ) -> list[tuple[str, str, str]]:
    """Validates the planned (kind, src, dst) jobs; returns them without duplicate entries.

    Args:
      jobs: from `command.plan_jobs`.
      inputs: the command-line inputs (files and folders).
      output: the -o argument.
      output_is_file: -o names the output file of a single input.
      extra_files: other files the run writes, by option name ("--mapping",
        "--report"); None values are ignored.

    Raises:
      UnsafeOutputError: naming the offending paths.
    """
    in_dirs = [(p, os.path.realpath(p)) for p in inputs if os.path.isdir(p)]
    in_files: dict[str, str] = {}
    for _, src, _ in jobs:
        in_files.setdefault(os.path.realpath(src), src)
    for p in inputs:
        if os.path.isfile(p):
            in_files.setdefault(os.path.realpath(p), p)

    out_real = os.path.realpath(output)
    if not output_is_file:
        if out_real in in_files:
            raise UnsafeOutputError(f"output folder {output} is the input file {in_files[out_real]} "
                                    f"(real path {out_real}); choose an -o outside every input")
        for p, real in in_dirs:
            if is_within(out_real, real):
                how = "is" if out_real == real else "is inside"
                via = "" if os.path.abspath(output) == out_real else f" (through a symlink: {out_real})"
                raise UnsafeOutputError(
                    f"output folder {output}{via} {how} the input folder {p} (real path {real}): "
                    f"it could overwrite originals and a later run would re-read outputs; "
                    f"choose an -o outside every input folder")

    seen: dict[str, tuple[str, str]] = {}  # real destination -> (real source, source)
    kept = []
    for kind, src, dst in jobs:
        src_real = os.path.realpath(src)
        dst_real = os.path.realpath(dst)
        via = " (through a symlink)" if os.path.abspath(dst) != dst_real else ""
        if dst_real in in_files:
            raise UnsafeOutputError(f"{src}: its output {dst}{via} is the input {in_files[dst_real]} "
                                    f"(real path {dst_real}); choose another -o")
        for p, real in in_dirs:
            if is_within(dst_real, real):
                raise UnsafeOutputError(
                    f"{src}: its output {dst}{via} reaches into the input folder {p} (real path "
                    f"{dst_real}); choose another -o")
        if dst_real in seen:
            other_real, other = seen[dst_real]
            if other_real == src_real:
                continue  # the same file given twice (e.g. a folder and a file in it)
            raise UnsafeOutputError(
                f"two inputs would be written to one output {dst}: {other} and {src}; "
                f"anonymize them in separate runs (or with different -o)")
        seen[dst_real] = (src_real, src)
        kept.append((kind, src, dst))

    for option, path in (extra_files or {}).items():
        if not path:
            continue
        real = os.path.realpath(path)
        if real in in_files:
            raise UnsafeOutputError(f"{option} {path} is the input {in_files[real]}; choose another file")
        if real in seen:
            raise UnsafeOutputError(f"{option} {path} is also the output of {seen[real][1]}; "
                                    f"choose another file")
    return kept


def destination_state(dst: str, expected: str) -> str:
    """'missing', 'exists', 'symlink', 'unsafe-folder' or 'not-a-file' (see module doc)."""
    if os.path.islink(dst):
        return "symlink"
    if os.path.realpath(dst) != expected:
        return "unsafe-folder"
    if os.path.lexists(dst):
        return "exists" if os.path.isfile(dst) else "not-a-file"
    return "missing"


def refusal(dst: str, state: str) -> str:
    """The per-file message for a destination state that is refused."""
    return {
        "symlink": f"destination {dst} is a symlink; not followed and not replaced (remove it)",
        "unsafe-folder": f"a folder on the way to {dst} is a symlink leading elsewhere "
                         f"(real path {os.path.realpath(dst)}); not written",
        "not-a-file": f"destination {dst} exists and is not a regular file; not replaced",
    }[state]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folders: Iterable[str]) -> list[str]:
    """Deletes `.ciagan-partial-<pid>-*` entries whose process has ended; returns them."""
    removed = []
    for folder in sorted(set(folders)):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            m = _TEMP_RE.match(name)
            if not m or _pid_alive(int(m.group(1))):
                continue
            path = os.path.join(folder, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def _fsync_path(path: str, directory: bool = False) -> None:
    try:
        fd = os.open(path, (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if directory else os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(tmp: str, dst: str, overwrite: bool) -> None:
    """Moves the complete `tmp` to `dst` atomically; never follows a symlink at `dst`."""
    if os.path.islink(dst):
        raise OutputRefusedError(refusal(dst, "symlink"))
    if os.path.lexists(dst) and not os.path.isfile(dst):
        raise OutputRefusedError(refusal(dst, "not-a-file"))
    if overwrite:
        os.replace(tmp, dst)  # rename(2): replaces a symlink planted meanwhile, never its target
        return
    try:
        os.link(tmp, dst)  # fails when anything (file or symlink) appeared at dst
    except FileExistsError as e:
        raise OutputRefusedError(f"{dst} appeared during the run; not replaced "
                                               f"(--overwrite replaces existing outputs)") from e
    except OSError:
        # File systems without hard links: a check, then an atomic rename.
        if os.path.lexists(dst):
            raise OutputRefusedError(f"{dst} appeared during the run; not replaced "
                                                   f"(--overwrite replaces existing outputs)") from None
        os.replace(tmp, dst)


@contextlib.contextmanager
def atomic_output(dst: str, *, overwrite: bool = False, expected: str | None = None
                  ) -> Iterator[str]:
    """Yields a private temporary path (same extension as `dst`) to write; publishes it on success.

    Raises:
      OutputRefusedError: the destination is (or became) a symlink, a folder
        on the way is a symlink leading away from `expected`, or (without
        `overwrite`) a file appeared at `dst`.
    """
    dst = os.path.abspath(dst)
    parent = os.path.dirname(dst)
    for _ in range(2):  # before creating folders (never through a symlink) and after
        if expected is not None and os.path.realpath(parent) != os.path.dirname(expected):
            raise OutputRefusedError(refusal(dst, "unsafe-folder"))
        os.makedirs(parent, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=parent)
    tmp = os.path.join(tmpdir, "partial" + os.path.splitext(dst)[1])
    try:
        yield tmp
        if os.path.islink(tmp) or not os.path.isfile(tmp):
            raise OutputRefusedError(f"{dst}: the writer produced no file")
        _fsync_path(tmp)
        _publish(tmp, dst, overwrite)
        _fsync_path(parent, directory=True)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def default_file_mode() -> int:
    """0o666 less the process umask (what `open(path, "w")` would give)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_json_atomic(path: str, obj, *, mode: int = 0o600, indent: int | None = None) -> None:
    """Writes JSON atomically through an exclusive mkstemp file in `path`'s folder, with `mode`.

    A symlink at `path` is replaced, never followed.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".json", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
