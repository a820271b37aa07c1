"""`genvision fid SOURCE_A SOURCE_B --memorization` end to end, in process (`helpers.cli`), on a tiny random
classifier: a folder of training images is flagged as copies (rate 1, each paired with itself), a folder of
held-out images the calibration did not use is not (rate near the calibration level), and every refusal is one
line, exit 2, before any image is read."""

from __future__ import annotations

import json

import pytest

from helpers import assert_one_line_error, cli, write_pngs

STRIDE = 25  # every 25th image of mnist5k:train (180, every class: the dataset is sorted by class) as PNG files
CALIBRATION = 250  # the even images of mnist5k:test calibrate the threshold; its odd ones are scored as fresh images


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    from genvision.data import load_dataset

    root = tmp_path_factory.mktemp("memorization")
    test = load_dataset("mnist5k:test").images
    write_pngs(load_dataset("mnist5k:train").images[::STRIDE], root / "copies")
    write_pngs(test[0::2], root / "calibration")  # 25 of each class, as the fresh ones
    write_pngs(test[1::2], root / "fresh")
    return {name: root / name for name in ("copies", "calibration", "fresh")} | {"root": root}


def fid_json(*args) -> dict:
    code, stdout, stderr = cli("fid", *map(str, args), "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def test_training_images_are_copies_and_fresh_images_are_not(folders, classifier_file):
    clf = ["--classifier", classifier_file, "--memorization", "--held-out", folders["calibration"]]
    copies = fid_json(folders["copies"], "mnist5k:train", *clf)
    assert copies["copy_rate"] == 1.0 and copies["copy_percentile"] == 1.0
    assert copies["memorization_held_out"] == str(folders["calibration"])
    assert copies["memorization_num_held_out"] == CALIBRATION and copies["copy_threshold"] > 0
    assert copies["memorization_distance_ratio"] < 1e-6
    pairs = copies["closest_pairs"]  # the i-th PNG is training image STRIDE x i (in dataset order) at distance ~0
    assert len(pairs) == 8 and all(pair["training"] == STRIDE * pair["generated"] for pair in pairs)
    assert all(pair["distance"] < 1e-6 for pair in pairs)
    assert [pair["distance"] for pair in pairs] == sorted(pair["distance"] for pair in pairs)

    fresh = fid_json(folders["fresh"], "mnist5k:train", *clf)
    assert fresh["copy_rate"] <= 0.04  # ~0.01, the calibration level, up to binomial noise on 250 images
    assert 0.9 < fresh["memorization_distance_ratio"] < 1.1
    wider = fid_json(folders["fresh"], "mnist5k:train", *clf, "--copy-percentile", 10)
    assert wider["copy_percentile"] == 10.0 and 0.05 <= wider["copy_rate"] <= 0.16  # ~0.10
    assert wider["copy_threshold"] > fresh["copy_threshold"] == copies["copy_threshold"]  # 10th percentile > 1st

    code, stdout, stderr = cli("fid", folders["copies"], "mnist5k:train", *clf)
    assert code == 0, stderr
    line = stdout.strip().splitlines()[-1]
    assert line.startswith(f"memorization: 100.00% of {folders['copies']}'s images are closer to a training image "
                           f"of mnist5k:train than 99% of held-out {folders['calibration']} images are (threshold ")
    assert line.endswith(f"(threshold {copies['copy_threshold']:.4g}; nearest-distance ratio 0)")


def test_default_held_out_is_the_test_split_of_the_training_dataset(folders, classifier_file):
    result = fid_json(folders["copies"], "mnist5k:train", "--classifier", classifier_file, "--memorization")
    assert result["memorization_held_out"] == "mnist5k:test" and result["memorization_num_held_out"] == 500
    assert result["copy_rate"] == 1.0
    plain = fid_json(folders["copies"], "mnist5k:train", "--classifier", classifier_file)
    assert not {key for key in plain if "copy" in key or "memorization" in key or key == "closest_pairs"}


@pytest.mark.parametrize("case", ["stats-b", "stats-a", "stats-held-out", "folder-default", "same-folder",
                                  "same-dataset", "test-split-default", "without-memorization", "percentile"])
def test_refusals_are_one_line_exit_2(folders, classifier_file, case):
    root, copies = folders["root"], folders["copies"]
    stats = root / "stats.npz"
    stats.write_bytes(b"")  # refused by kind, before it is read
    args = {
        "stats-b": ([copies, stats, "--memorization"], ["is a statistics file", "SOURCE_B"]),
        "stats-a": ([stats, "mnist5k:train", "--memorization"], ["is a statistics file", "SOURCE_A"]),
        "stats-held-out": ([copies, "mnist5k:train", "--memorization", "--held-out", stats],
                           ["--held-out", "statistics file"]),
        "folder-default": ([folders["fresh"], copies, "--memorization"],
                           ["would default to", "the training set", "--held-out"]),
        "same-folder": ([folders["fresh"], copies, "--memorization", "--held-out", f"folder:{copies}"],
                        ["the held-out set is", "the training set", "--held-out"]),
        "same-dataset": ([copies, "mnist5k:train", "--memorization", "--held-out", "mnist5k"],
                         ["the held-out set is mnist5k", "the training set"]),
        "test-split-default": ([copies, "mnist5k:test", "--memorization"], ["would default to mnist5k:test"]),
        "without-memorization": ([copies, "mnist5k:train", "--held-out", "mnist5k:test"],
                                 ["--held-out mnist5k:test applies only with --memorization"]),
        "percentile": ([copies, "mnist5k:train", "--memorization", "--copy-percentile", 100],
                       ["--copy-percentile", "(0, 100)"]),
    }[case]
    code, stdout, stderr = cli("fid", *args[0], "--classifier", classifier_file)
    assert stdout == ""
    assert_one_line_error(code, stderr, *args[1], command="fid")
