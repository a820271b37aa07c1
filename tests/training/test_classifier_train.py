"""`genvision train-classifier` end to end, as a subprocess (one short epoch)."""

import json

import pytest

from genvision.weights import load_classifier
from helpers import metrics_records, run_genvision, tensorboard_events


def test_train_classifier_writes_run_folder_and_reports_accuracy(tmp_path):
    out = tmp_path / "clf"
    command = ["train-classifier", "--out-dir", out, "--epochs", "2", "--base-channels", "8", "--num-features", "16",
               "--batch-size", "64"]
    result = run_genvision(*command, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("epoch  1/2") and lines[1].startswith("epoch  2/2") and "test accuracy" in lines[1]
    assert lines[-1].startswith("final test accuracy") and "mnist5k:test (500 images)" in lines[-1]
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "classifier" and config["config"]["base_channels"] == 8
    record = metrics_records(out)[-1]
    assert record["epoch"] == 2 and 0.0 <= record["test_accuracy"] <= 1.0
    model, info = load_classifier(out / "classifier.safetensors")
    assert (model.feature_width, model.num_features) == (16, 16 + 2 * 8)  # feature layer + low-level block
    assert info["test_accuracy"] == record["test_accuracy"]
    assert record["test_accuracy"] > 0.5  # two tiny epochs already beat chance (0.1) by far
    scalars, _ = tensorboard_events(out)  # --report-to tensorboard, the default
    assert [step for step, _ in scalars["test_accuracy"]] == [1, 2]
    assert scalars["test_accuracy"][-1][1] == pytest.approx(record["test_accuracy"])

    again = run_genvision(*command, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1
