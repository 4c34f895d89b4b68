"""LFW verification (`ciagan_jax.evaluation.lfw_verification`).

The fold/threshold logic is checked on synthetic distances with a known
answer, the pairs-file parser on small written files. On the real shared
folds (../shared/data/lfw_pairs, 20 pairs per class per fold) the originals'
TAR is recomputed with plain numpy from the same descriptors; one tiny
end-to-end run of the command goes through the shipped model.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import numpy as np
import pytest

from ciagan_jax.evaluation import lfw_verification as lv

SUBSET = 20  # pairs per class per fold on the real folds


# --------------------------------------------------------------------------
# Thresholds and TAR on synthetic distances
# --------------------------------------------------------------------------

def test_far_threshold_is_the_k_plus_first_smallest_negative():
    neg = np.array([0.9, 0.3, 0.7, 0.5])
    # 4 negatives at FAR 0.001: no false accept allowed -> below the smallest.
    assert lv.far_threshold(neg) == 0.3
    assert not lv.accepted(np.array([0.3]), 0.3)[0] and lv.accepted(np.array([0.2999]), 0.3)[0]
    # 3,000 negatives at FAR 0.001 allow exactly 3 false accepts: the 4th smallest.
    big = np.arange(3000, dtype=np.float64)[::-1] + 1.0
    t = lv.far_threshold(big)
    assert t == 4.0 and lv.accepted(big, t).sum() == 3
    # 2,700 (nine LFW folds) allow 2: the 3rd smallest.
    assert lv.far_threshold(np.arange(2700.0)) == 2.0
    # Ties at the cut: still at most k accepted.
    assert lv.far_threshold(np.array([1.0, 1.0, 2.0]), far=0.34) == 1.0
    assert lv.far_threshold(np.array([1.0, 2.0]), far=1.0) == math.inf
    with pytest.raises(ValueError, match="no different-person"):
        lv.far_threshold(np.array([np.nan]))


def test_each_fold_is_thresholded_on_the_other_folds_with_known_tar():
    # Three folds; fold f's negatives have smallest distance 0.5 + 0.1 f.
    neg_folds = np.repeat([0, 1, 2], 4)
    neg_d = np.concatenate([0.5 + 0.1 * f + np.array([0.0, 0.2, 0.4, 0.6]) for f in range(3)])
    th = lv.fold_thresholds(neg_d, neg_folds, [0, 1, 2])
    assert {f: round(t.value, 9) for f, t in th.items()} == {0: 0.6, 1: 0.5, 2: 0.5}
    assert th[0].train_folds == (1, 2) and th[0].negatives == 8 and not th[0].same_fold
    pos_folds = np.repeat([0, 1, 2], 4)
    pos_d = np.array([0.1, 0.55, 0.65, np.nan,   # fold 0, t 0.6: 2 of 4
                      0.1, 0.2, 0.3, 0.49,        # fold 1, t 0.5: 4 of 4
                      0.5, 0.6, 0.7, 0.1])        # fold 2, t 0.5: 1 of 4
    tar = lv.rate_by_fold(pos_d, pos_folds, th)
    assert tar == {0: 0.5, 1: 1.0, 2: 0.25}
    mean, std = lv.mean_std(list(tar.values()))
    assert mean == pytest.approx(1.75 / 3) and std == pytest.approx(np.std([0.5, 1.0, 0.25], ddof=1))


def test_one_fold_is_thresholded_on_itself_and_flagged():
    th = lv.fold_thresholds(np.array([0.4, 0.8]), np.array([0, 0]), [0])
    assert th[0].value == 0.4 and th[0].same_fold and th[0].train_folds == (0,)
    assert lv.mean_std([0.7]) == (0.7, None)
    note = lv.protocol_note(1, 1, None, th)
    assert "ONE fold" in note and "own" in note
    two = lv.fold_thresholds(np.array([0.4, 0.8]), np.array([0, 1]), [0, 1])
    assert "other 1 fold" in lv.protocol_note(2, 2, None, two)


# --------------------------------------------------------------------------
# Pairs file
# --------------------------------------------------------------------------

GOOD = """2\t2
A\t1\t2
B\t1\t3
A\t1\tB\t2
C\t4\tA\t2
C\t1\t2
D\t2\t3
A\t3\tD\t1
B\t2\tC\t3
"""


def _write(tmp_path, text, name="pairs.txt") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_parse_pairs_reads_folds_classes_and_lines(tmp_path):
    pf = lv.parse_pairs(_write(tmp_path, GOOD + "\n\n"))
    assert (pf.num_folds, pf.pairs_per_class, len(pf.pairs)) == (2, 2, 8)
    assert [(p.fold, p.same) for p in pf.pairs] == [(0, True)] * 2 + [(0, False)] * 2 + \
        [(1, True)] * 2 + [(1, False)] * 2
    assert pf.pairs[0] == lv.Pair(0, True, "A", 1, "A", 2, 2)
    assert pf.pairs[3].label() == "C 4 A 2" and pf.pairs[3].line == 5
    assert lv.image_path("/x", "A", 7) == os.path.join("/x", "A", "A_0007.jpg")
    kept = lv.limit_pairs(pf.pairs, 1)
    assert [p.line for p in kept] == [2, 4, 6, 8]
    # pairsDevTrain.txt style: one number = one fold.
    one = lv.parse_pairs(_write(tmp_path, "1\nA 1 2\nA 1 B 2\n", "dev.txt"))
    assert (one.num_folds, one.pairs_per_class, len(one.pairs)) == (1, 1, 2)


@pytest.mark.parametrize("text, match", [
    ("", r"empty pairs file"),
    ("2 300 7\n", r":1: header must be"),
    ("two 3\n", r":1: the number of folds must be a positive integer, got 'two'"),
    ("1 0\n", r":1: pairs per class must be a positive integer"),
    ("1 1\nA 1 2\n", r"header says 1 fold\(s\) x 2 x 1 = 2 pair lines, the file has 1"),
    ("1 1\nA 1 2\nA 1 B 2\nC 1 2\n", r"= 2 pair lines, the file has 3"),
    ("1 1\nA 1 B 2\nA 1 B 2\n", r":2: fold 1 same-person line must be 'name i j' \(3 fields\), got 4"),
    ("1 1\nA 1 2\nA 1 2\n", r":3: fold 1 different-person line must be 'name1 i name2 j' \(4 fields\), got 3"),
    ("1 1\nA 1 x\nA 1 B 2\n", r":2: image number must be a positive integer, got 'x'"),
])
def test_malformed_pairs_files_name_file_line_and_problem(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(lv.PairsFileError, match=match) as e:
        lv.parse_pairs(path)
    assert path in str(e.value)


def test_missing_images_and_folder_are_named(tmp_path):
    path = _write(tmp_path, GOOD)
    pf = lv.parse_pairs(path)
    with pytest.raises(lv.PairsFileError, match="images folder not found"):
        lv.check_images(pf.pairs, str(tmp_path / "nope"), path)
    imgs = tmp_path / "lfw"
    for p in pf.pairs:
        for q in lv.pair_paths(p, str(imgs)):
            os.makedirs(os.path.dirname(q), exist_ok=True)
            pathlib.Path(q).touch()
    lv.check_images(pf.pairs, str(imgs), path)
    os.remove(lv.image_path(str(imgs), "C", 4))
    with pytest.raises(lv.PairsFileError, match=r"pairs.txt:5: image .*C_0004.jpg not found \(1 image"):
        lv.check_images(pf.pairs, str(imgs), path)


def test_pnca_describer_crops_the_box_and_normalises():
    seen = []

    def fake(batch):
        seen.append(batch.shape)
        return np.full((len(batch), 4), 3.0, np.float32)

    d = lv.PncaDescriber("ckpt", embed=fake)
    out = d(np.zeros((250, 250, 3), np.uint8), (60, 60, 180, 180), None)
    assert seen == [(1, 128, 128, 3)] and np.allclose(out, 0.5) and d.name == "pnca:ckpt"
    with pytest.raises(ValueError, match="unknown embedder"):
        lv.make_describer("facenet")


# --------------------------------------------------------------------------
# Real shared folds
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lfw(shared_data):
    root = shared_data / "lfw_pairs"
    if not (root / "pairs.txt").is_file():
        pytest.skip(f"{root}/pairs.txt not found (LFW folds in ../shared/data)")
    return root


@pytest.fixture(scope="module")
def analyzer():
    from ciagan_jax.data.faces import FaceAnalyzer
    return FaceAnalyzer("hog", 1)


@pytest.fixture(scope="module")
def describer():
    return lv.DlibDescriber()


@pytest.fixture(scope="module")
def subset_originals(lfw, analyzer, describer):
    pairs = lv.limit_pairs(lv.parse_pairs(str(lfw / "pairs.txt")).pairs, SUBSET)
    paths = sorted({q for p in pairs for q in lv.pair_paths(p, str(lfw / "lfw"))})
    return pairs, lv.describe_originals(paths, analyzer, describer)


def test_original_tar_on_real_folds_matches_plain_numpy(lfw, analyzer, describer, subset_originals,
                                                        tmp_path):
    pairs, originals = subset_originals
    r = lv.evaluate_lfw(str(lfw / "pairs.txt"), str(lfw / "lfw"), None, str(tmp_path),
                        rows=("original",), max_pairs_per_fold=SUBSET, progress=False,
                        analyzer=analyzer, describer=describer, originals=originals)
    img = str(lfw / "lfw")

    def dist(p):
        a, b = lv.pair_paths(p, img)
        return float(np.linalg.norm(originals[a].descriptor - originals[b].descriptor))

    tars = []
    for fold in (0, 1):
        other_neg = [dist(p) for p in pairs if not p.same and p.fold != fold]
        t = min(other_neg)  # 20 negatives at FAR 0.001: below the smallest
        pos = np.array([dist(p) for p in pairs if p.same and p.fold == fold])
        tars.append(float(np.mean(pos < t)))
        assert r["thresholds"][str(fold + 1)]["value"] == pytest.approx(t)
    row = r["rows"]["original"]
    assert row["tar_by_fold"] == {"1": pytest.approx(tars[0]), "2": pytest.approx(tars[1])}
    assert row["tar_mean"] == pytest.approx(np.mean(tars))
    assert row["tar_std"] == pytest.approx(np.std(tars, ddof=1))
    assert (row["folds"], row["pairs"], r["counts"]["different_person"]) == (2, 2 * SUBSET, 2 * SUBSET)
    assert 0.5 < row["tar_mean"] <= 1.0  # dlib verifies most LFW originals
    assert r["folds_in_file"] == 2 and "2 of LFW's 10 folds" in r["protocol_note"]
    on_disk = json.loads((tmp_path / "lfw_verification.json").read_text())
    assert on_disk["rows"] == r["rows"]
    assert "| original |" in (tmp_path / "lfw_verification.md").read_text()


def test_command_end_to_end_with_the_shipped_model(lfw, tmp_path, capsys):
    out = tmp_path / "out"
    rc = lv.main(["--pairs", str(lfw / "pairs.txt"), "--images", str(lfw / "lfw"),
                  "--out", str(out), "--max-pairs-per-fold", "2", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out.strip().splitlines()
    last = json.loads(printed[-1])
    assert list(last["rows"]) == ["original", "ciagan", "blur17", "pixel8"]
    for row in last["rows"].values():
        assert set(row) == {"tar_mean", "tar_std", "folds", "pairs", "no_face"}
        assert row["folds"] == 2 and row["pairs"] == 4
        assert 0.0 <= row["tar_mean"] <= 1.0
    full = json.loads((out / "lfw_verification.json").read_text())
    assert sum(full["anonymizer_outcomes"]["ciagan"].values()) == 4
    assert len(full["rows"]["ciagan"]["no_face_pairs"]) == full["rows"]["ciagan"]["no_face"]
    assert full["model"]["kind"] == "export"
    assert len(full["per_pair"]) == 8 and set(full["per_pair"][0]) >= set(lv.ROWS)
    md = (out / "lfw_verification.md").read_text()
    assert "0.986" in md and "0.034" in md and "FaceNet" in md


def test_bad_pairs_file_exits_2_naming_the_file(tmp_path, capsys):
    path = _write(tmp_path, "1 1\nA 1 2 3\nA 1 B 2\n")
    rc = lv.main(["--pairs", path, "--images", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2 and f"{path}:2:" in capsys.readouterr().err


def test_evaluate_mode_runs_verification_from_the_checkpoint_generator(lfw, tmp_path):
    """--mode=evaluate's hook: off by default; with lfw_pairs set, the checkpoint's generator."""

    import jax  # pylint: disable=g-import-not-at-top

    from ciagan_jax.evaluation import checkpoint_eval  # pylint: disable=g-import-not-at-top
    from ciagan_jax.models import factory  # pylint: disable=g-import-not-at-top

    from ciagan_jax.config_loading import load_config  # pylint: disable=g-import-not-at-top

    config = load_config("release:smoke")
    variables = factory.init_generator(config, jax.random.key(0))  # untrained: the code path only
    assert config.eval.lfw_pairs == "" and checkpoint_eval.lfw_verification(
        config, variables, 5, str(tmp_path), "ckpt") is None
    config.eval.lfw_pairs = str(lfw / "pairs.txt")
    with pytest.raises(ValueError, match="lfw_images is empty"):
        checkpoint_eval.lfw_verification(config, variables, 5, str(tmp_path), "ckpt")
    config.eval.lfw_images = str(lfw / "lfw")
    config.eval.lfw_max_pairs_per_fold = 1
    r = checkpoint_eval.lfw_verification(config, variables, 5, str(tmp_path), str(tmp_path / "7"))
    assert r["model"]["kind"] == "checkpoint" and r["model"]["trained_identities"] == 5
    assert r["rows"]["ciagan"]["pairs"] == 2 and r["max_pairs_per_fold"] == 1
    assert (tmp_path / "lfw_verification.json").is_file() and (tmp_path / "lfw_verification.md").is_file()
