"""benchmarks/bench_measures.py end to end on a tiny trained GAN: every measure's value is the library's own (the
`genvision fid` of the same samples), every step is timed, and the DINOv2 cost line is written."""

import json

import pytest

from helpers import ROOT, TINY_GAN, run_genvision, run_python, subprocess_env, train_to_completion

SCRIPT = ROOT / "benchmarks" / "bench_measures.py"


def test_bench_measures_reports_the_fid_commands_values_and_every_steps_time(tmp_path):
    pytest.importorskip("timm")
    run = tmp_path / "run"
    train_to_completion("train_gan.py", run, *TINY_GAN, "--num-steps", "2", "--log-every", "0", "--sample-every", "0")
    env = subprocess_env(tmp_path / "cache")
    proc = run_python([str(SCRIPT), str(run), "--num-samples", "200", "300", "--dinov2-models", "vits14",
                       "--dinov2-images", "2", "--json", str(tmp_path / "figures.json")], env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert [result["num_samples"] for result in figures["results"]] == [200, 300]
    measured = figures["results"][1]
    assert set(measured["seconds"]) == {"sampling", "features (classifier)", "FID", "KID",
                                        "precision/recall/density/coverage", "FD-infinity", "memorization",
                                        "classifier score, classes"}
    assert all(seconds >= 0 for seconds in measured["seconds"].values())
    assert figures["dinov2_seconds_per_image"]["vits14"] > 0
    assert "| vits14 |" in proc.stdout and "## " + str(run) in proc.stdout

    scored = run_genvision("fid", run, "mnist5k:train", "--num-samples", "300", "--seed", "0", "--json", "--kid",
                           "--precision-recall", "--fd-infinity", "--memorization", env=env)
    assert scored.returncode == 0, scored.stderr[-3000:]
    fid = json.loads(scored.stdout)
    values = measured["values"]
    assert values["fid"] == pytest.approx(fid["fid"], rel=1e-9)
    assert values["fd_infinity"] == pytest.approx(fid["fd_infinity"], rel=1e-9)
    for key in ("kid", "precision", "recall", "density", "coverage", "copy_rate", "memorization_distance_ratio"):
        assert values[key] == pytest.approx(fid[key], rel=1e-9), key
