"""Outputs can never destroy inputs; folder runs resume; exit codes are distinct.

Real photos from ../shared/data/photos (small ones, so each in-process
`command.main` run is quick) and the session's random-init smoke bundle.
Refusals happen before the model is loaded, so those tests cost no model run.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from ciagan_jax.anonymize import command, identity, outputs


def _inputs(tmp_path, photos_dir, names=(("a.jpg", "obama_small.jpg"), ("b.jpg", "obama_small.jpg")),
            folder="in"):
    d = tmp_path / folder
    d.mkdir(parents=True, exist_ok=True)
    for dst, src in names:
        (d / dst).parent.mkdir(parents=True, exist_ok=True)
        (d / dst).write_bytes((photos_dir / src).read_bytes())
    return d


def _snapshot(folder):
    """{relative path: bytes} of every file (symlinks as their target) below `folder`."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, folder)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = f.read()
    return out


def _run(args, smoke_setup, *extra):
    return command.main([*map(str, args), "--model", str(smoke_setup[2]), "--quiet", *extra])


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# --- refused before anything is written (exit 2) --------------------------------------------


def test_output_folder_symlinked_to_the_input_is_refused_and_originals_stay_byte_identical(
        tmp_path, photos_dir, smoke_setup, capsys):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"), ("b.jpg", "biden.jpg")))
    before = _snapshot(src)
    link = tmp_path / "out"
    link.symlink_to(src, target_is_directory=True)
    for extra in ((), ("--overwrite",)):
        assert _run([src, "-o", link], smoke_setup, *extra) == 2
        err = capsys.readouterr().err
        assert str(link) in err and str(src) in err and "Traceback" not in err
    assert _snapshot(src) == before


def test_output_folder_nested_inside_the_input_is_refused(tmp_path, photos_dir, smoke_setup, capsys):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"), ("sub/a.jpg", "biden.jpg")))
    before = _snapshot(src)
    # -o in/sub while in/sub/a.jpg is itself an input; and a fresh folder inside the input.
    for out in (src / "sub", src / "anonymized"):
        assert _run([src, "-o", out], smoke_setup) == 2
        err = capsys.readouterr().err
        assert "inside the input folder" in err and str(out) in err
    assert _snapshot(src) == before  # nothing written, "anonymized" not even created

    # An output folder that reaches the input through a symlink inside it.
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(src / "sub", target_is_directory=True)
    assert _run([src, "-o", out], smoke_setup) == 2
    assert "through a symlink" in capsys.readouterr().err
    assert _snapshot(src) == before
    assert sorted(os.listdir(out)) == ["sub"]


def test_single_file_output_that_is_the_input_itself_is_refused(tmp_path, photos_dir, smoke_setup,
                                                                capsys):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"),))
    (tmp_path / "alias.jpg").symlink_to(src / "a.jpg")
    before = _snapshot(src)
    for out in (src / "a.jpg", tmp_path / "alias.jpg", src):
        assert _run([src / "a.jpg", "-o", out], smoke_setup) == 2
        assert "Traceback" not in capsys.readouterr().err
    assert _snapshot(src) == before


def test_two_inputs_colliding_on_one_output_name_are_refused(tmp_path, photos_dir, smoke_setup,
                                                             capsys):
    one = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"),), folder="cam1")
    two = _inputs(tmp_path, photos_dir, (("a.jpg", "biden.jpg"),), folder="cam2")
    out = tmp_path / "out"
    assert _run([one, two, "-o", out], smoke_setup) == 2
    err = capsys.readouterr().err
    assert "two inputs would be written to one output" in err
    assert str(one / "a.jpg") in err and str(two / "a.jpg") in err
    assert not out.exists()


def test_the_same_file_given_twice_is_planned_once(tmp_path, photos_dir):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"),))
    out = str(tmp_path / "out")
    inputs = [str(src), str(src / "a.jpg")]
    jobs, errors = command.plan_jobs(inputs, out)
    assert len(jobs) == 2 and not errors
    assert outputs.check_plan(jobs, inputs, out) == jobs[:1]


def test_mapping_or_report_path_on_an_input_is_refused(tmp_path, photos_dir, smoke_setup, capsys):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"),))
    before = _snapshot(src)
    for opt in ("--mapping", "--report"):
        assert _run([src, "-o", tmp_path / "out", opt, src / "a.jpg"], smoke_setup) == 2
        assert f"{opt} {src / 'a.jpg'} is the input" in capsys.readouterr().err
    assert _snapshot(src) == before


@pytest.mark.parametrize("content, field", [
    ([], "(top level)"),
    ({"format": identity.MAPPING_FORMAT, "num_identities": 4, "people": []}, "version"),
    ({"format": identity.MAPPING_FORMAT, "version": 1, "num_identities": "4", "people": []},
     "num_identities"),
    ({"format": identity.MAPPING_FORMAT, "version": 1, "num_identities": 4, "people": {}}, "people"),
    ({"format": identity.MAPPING_FORMAT, "version": 1, "num_identities": 4,
      "people": [{"identity": 0, "count": 1, "descriptor": [0.0] * 128},
                 {"identity": 0, "count": 1, "descriptor": [0.0] * 12}]}, "people[1].descriptor"),
    ({"format": identity.MAPPING_FORMAT, "version": 1, "num_identities": 4,
      "people": [{"identity": "3", "descriptor": [0.0] * 128}]}, "people[0].identity"),
    ({"format": identity.MAPPING_FORMAT, "version": 1, "num_identities": 4,
      "people": [{"identity": 9, "descriptor": [0.0] * 128}]}, "people[0].identity"),
    ({"format": identity.MAPPING_FORMAT, "version": 1, "num_identities": 4,
      "people": [{"identity": 1, "count": 0, "descriptor": [0.0] * 128}]}, "people[0].count"),
    ({"format": identity.MAPPING_FORMAT, "version": 1, "num_identities": 4,
      "people": [{"identity": 1, "descriptor": ["x"] * 128}]}, "people[0].descriptor"),
])
def test_malformed_mapping_file_names_file_and_field(tmp_path, content, field):
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError) as e:
        identity.IdentityMapping(identity.IdentityChooser("next", 4), str(path))
    assert str(path) in str(e.value) and f"field {field}:" in str(e.value)


def test_malformed_mapping_file_on_the_command_line_exits_2_with_a_message(
        tmp_path, photos_dir, smoke_setup, capsys):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"),))
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps({"format": identity.MAPPING_FORMAT, "num_identities": 1,
                                "people": [{"identity": 0}]}))
    out = tmp_path / "out"
    rc = _run([src, "-o", out, "--mapping", path], smoke_setup)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert str(path) in err and "field version:" in err
    assert not out.exists()


# --- writing -----------------------------------------------------------------------------------


def test_atomic_output_never_follows_a_symlink_planted_while_writing(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    dst = tmp_path / "out" / "a.jpg"
    with pytest.raises(outputs.OutputRefusedError):
        with outputs.atomic_output(str(dst)) as tmp:
            assert os.path.basename(os.path.dirname(tmp)).startswith(outputs.TEMP_PREFIX)
            assert stat.S_IMODE(os.stat(os.path.dirname(tmp)).st_mode) == 0o700
            open(tmp, "wb").write(b"new")
            dst.symlink_to(victim)  # planted between the write and the publish
    assert victim.read_bytes() == b"precious" and dst.is_symlink()
    # --overwrite replaces files, never a symlink (nor what it points at).
    with pytest.raises(outputs.OutputRefusedError):
        with outputs.atomic_output(str(dst), overwrite=True) as tmp:
            open(tmp, "wb").write(b"new")
    assert victim.read_bytes() == b"precious" and dst.is_symlink()
    assert os.listdir(dst.parent) == ["a.jpg"]  # no temporary left
    dst.unlink()
    dst.write_bytes(b"old")
    with outputs.atomic_output(str(dst), overwrite=True) as tmp:
        open(tmp, "wb").write(b"new")
    assert dst.read_bytes() == b"new" and os.listdir(dst.parent) == ["a.jpg"]


def test_planted_symlink_at_a_destination_is_not_followed(tmp_path, photos_dir, smoke_setup, capsys):
    src = _inputs(tmp_path, photos_dir)
    victim, victim2 = tmp_path / "victim.jpg", tmp_path / "victim2.jpg"
    victim.write_bytes(b"do not touch")
    victim2.write_bytes(b"do not touch either")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg").symlink_to(victim)  # at the final name
    (out / "b.jpg.part").symlink_to(victim2)  # at the old predictable temporary name
    rc = _run([src, "-o", out, "--overwrite", "--report", tmp_path / "r.json"], smoke_setup)
    err = capsys.readouterr().err
    assert rc == 1
    assert "a.jpg is a symlink" in err and "Traceback" not in err
    assert victim.read_bytes() == b"do not touch" and victim2.read_bytes() == b"do not touch either"
    assert (out / "a.jpg").is_symlink() and os.readlink(out / "a.jpg") == str(victim)
    assert (out / "b.jpg").is_file() and not (out / "b.jpg").is_symlink()
    rep = json.loads((tmp_path / "r.json").read_text())
    status = {os.path.basename(f["input"]): f["status"] for f in rep["files"]}
    assert status == {"a.jpg": "error", "b.jpg": "anonymized"}
    assert rep["exit_status"] == 1 and [s["input"] for s in rep["skipped"]] == [str(src / "a.jpg")]


def test_existing_outputs_are_skipped_by_default_and_replaced_only_with_overwrite(
        tmp_path, photos_dir, smoke_setup, capsys):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"),))
    out, rep_path = tmp_path / "out", tmp_path / "r.json"
    assert _run([src, "-o", out], smoke_setup) == 0
    first = os.stat(out / "a.jpg")
    capsys.readouterr()

    assert _run([src, "-o", out, "--report", rep_path], smoke_setup) == 0
    captured = capsys.readouterr()
    again = os.stat(out / "a.jpg")
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert "skipped-existing" in captured.err and "1 already done (skipped-existing)" in captured.out
    rep = json.loads(rep_path.read_text())
    assert rep["files"][0]["status"] == "skipped-existing" and rep["totals"]["skipped_existing"] == 1

    assert _run([src, "-o", out, "--overwrite", "--report", rep_path], smoke_setup) == 0
    assert os.stat(out / "a.jpg").st_ino != first.st_ino
    assert json.loads(rep_path.read_text())["files"][0]["status"] == "anonymized"
    assert os.listdir(out) == ["a.jpg"]


def test_mapping_file_is_written_owner_only(tmp_path, photos_dir, smoke_setup):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"),))
    path = tmp_path / "private" / "mapping.json"
    assert _run([src, "-o", tmp_path / "out", "--mapping", path], smoke_setup) == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(json.loads(path.read_text())["people"]) == 1
    assert os.listdir(path.parent) == ["mapping.json"]
    assert "biometric" in command.build_parser().format_help()


def test_folder_run_after_an_interruption_skips_finished_outputs_and_redoes_the_rest(
        tmp_path, photos_dir, smoke_setup, capsys):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"), ("sub/b.jpg", "obama_small.jpg")))
    out = tmp_path / "out"
    assert _run([src, "-o", out], smoke_setup) == 0
    # What a SIGKILL during b.jpg leaves: a.jpg complete, b.jpg missing, b's
    # private temporary folder holding a partial file (also one in the input).
    os.remove(out / "sub" / "b.jpg")
    dead = _dead_pid()
    stale = out / "sub" / f"{outputs.TEMP_PREFIX}{dead}-x1y2z3"
    stale.mkdir()
    (stale / "partial.jpg").write_bytes((photos_dir / "obama_small.jpg").read_bytes()[:1000])
    (src / f"{outputs.TEMP_PREFIX}{dead}-q").mkdir()
    (src / f"{outputs.TEMP_PREFIX}{dead}-q" / "partial.jpg").write_bytes(b"partial")
    (src / "old.jpg.part.jpg").write_bytes(b"partial")
    a_before = os.stat(out / "a.jpg")
    capsys.readouterr()

    rep_path = tmp_path / "r.json"
    assert _run([src, "-o", out, "--report", rep_path], smoke_setup) == 0
    a_after = os.stat(out / "a.jpg")
    assert (a_after.st_ino, a_after.st_mtime_ns) == (a_before.st_ino, a_before.st_mtime_ns)
    assert (out / "sub" / "b.jpg").is_file() and not stale.exists()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.jpg", "sub", "sub/b.jpg"]
    rep = json.loads(rep_path.read_text())
    status = {os.path.relpath(f["input"], src): f["status"] for f in rep["files"]}
    assert status == {"a.jpg": "skipped-existing", "sub/b.jpg": "anonymized"}  # leftovers not ingested


def test_sigkilled_folder_run_resumes(tmp_path, photos_dir, smoke_setup):
    """A real `kill -9` once the first output is published; the rerun finishes the rest."""
    names = [(f"p{i}.jpg", "obama_small.jpg") for i in range(8)]
    src = _inputs(tmp_path, photos_dir, names)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ciagan_jax.anonymize", str(src), "-o", str(out),
           "--model", str(smoke_setup[2]), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out.is_dir() and any(n.endswith(".jpg") for n in os.listdir(out)):
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"the run ended (status {proc.returncode}) before it could be killed: "
                    f"{proc.stderr.read().decode()[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = {n: os.stat(out / n) for n in os.listdir(out) if n.endswith(".jpg")}
    assert 1 <= len(done) < len(names)

    assert command.main([str(src), "-o", str(out), "--model", str(smoke_setup[2]), "--quiet"]) == 0
    for n, st in done.items():
        now = os.stat(out / n)
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), n
    assert sorted(os.listdir(out)) == sorted(n for n, _ in names)  # temporaries gone
    from ciagan_jax.data import image_io
    for n, _ in names:
        assert image_io.load_rgb(str(out / n)).shape == (240, 320, 3)


def test_corrupt_image_in_the_folder_gives_exit_1_and_is_listed(tmp_path, photos_dir, smoke_setup,
                                                                capsys):
    src = _inputs(tmp_path, photos_dir, (("a.jpg", "obama_small.jpg"),))
    good = (photos_dir / "obama_small.jpg").read_bytes()
    (src / "broken.jpg").write_bytes(good[:len(good) // 3])
    rep_path = tmp_path / "r.json"
    assert _run([src, "-o", tmp_path / "out", "--report", rep_path], smoke_setup) == 1
    err = capsys.readouterr().err
    assert "1 input(s) skipped" in err and str(src / "broken.jpg") in err and "Traceback" not in err
    rep = json.loads(rep_path.read_text())
    assert [s["input"] for s in rep["skipped"]] == [str(src / "broken.jpg")]
    assert rep["exit_status"] == 1 and os.listdir(tmp_path / "out") == ["a.jpg"]
