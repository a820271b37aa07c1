"""benchmarks/bench_data_efficiency.py end to end in --quick mode: the subset is the first share of each class of
mnist5k:train, each cell trains with its mode's flags on it, and its numbers are the library's own."""

import importlib.util
import json

import pytest
import torch

from genvision.data import load_dataset
from helpers import ROOT, metrics_records, run_genvision, run_python, saved_config, subprocess_env

SCRIPT = ROOT / "benchmarks" / "bench_data_efficiency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_data_efficiency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_cells_train_on_the_subset_with_their_mode_and_score_as_the_library_does(tmp_path, bench):
    env = subprocess_env(tmp_path / "cache")
    work = tmp_path / "de"
    proc = run_python([str(SCRIPT), "--quick", "--fractions", "10", "--modes", "none", "adaptive", "--jobs", "2",
                       "--work-dir", str(work), "--json", str(tmp_path / "de.json")], env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["mode"]: row for row in json.loads((tmp_path / "de.json").read_text())["rows"]}
    assert set(rows) == {"none", "adaptive"} and rows["none"]["images"] == 450

    # The subset: the first 10% of each class, pixel for pixel.
    full, subset = load_dataset("mnist5k:train"), load_dataset(f"folder:{work / 'data-10pct'}")
    for label in range(10):
        first = full.images[(full.labels == label).nonzero().flatten()[:45]]
        torch.testing.assert_close(subset.images[subset.labels == label], first, rtol=0, atol=0)

    adaptive = saved_config(work / "10pct-adaptive", "gan")
    assert adaptive["augment"] == "color,translation,cutout" and adaptive["augment_target"] == 0.6
    assert saved_config(work / "10pct-none", "gan")["augment"] == ""
    assert adaptive["ema_bn_batches"] == 0  # as the published table was measured (`TABLE_FLAGS`)
    logged = [r["aug_p"] for r in metrics_records(work / "10pct-adaptive") if "aug_p" in r]
    assert logged and rows["adaptive"]["aug_p_final"] == logged[-1] and rows["none"]["aug_p_final"] is None

    checkpoint = work / "10pct-none" / "checkpoints" / f"step-{rows['none']['steps']:06d}"
    scored = run_genvision("fid", checkpoint, "mnist5k:train", "--num-samples", "64", "--seed", "0", "--json",
                           "--precision-recall", env=env)
    fid = json.loads(scored.stdout)
    for key in ("fid", "precision", "recall", "density", "coverage"):
        assert rows["none"][key] == pytest.approx(fid[key], rel=1e-9), key
    assert -1 <= rows["none"]["d_train"]["sign"] <= 1 and 0 < rows["none"]["d_held_out"]["sigmoid"] < 1
    assert "| 10% (450) | adaptive |" in proc.stdout


def test_help_prints():
    proc = run_python([str(SCRIPT), "--help"], timeout=120)
    assert proc.returncode == 0 and "% of each class of mnist5k:train" in proc.stdout, proc.stderr[-2000:]
