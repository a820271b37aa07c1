"""`--report-to`: Accelerate's trackers get every logged scalar at its step and the grids at every sample step; a
resumed run continues the same TensorBoard curves without duplicated steps; a tracker whose package is missing is one
line before anything is written."""

import json
import shutil

import pytest
from helpers import ROOT, assert_one_line_error, cli, metrics_records, tiny_flags, wait
from helpers import tensorboard_events as events

TINY = [*tiny_flags(latent_dim=8), "--log-every", "1", "--sample-every", "2", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, start_process):
    """A 4-step GAN (then resumed from its step-2 checkpoint to step 6, as if killed after logging step 4) and a
    2-step VAE, with the default --report-to tensorboard."""
    root = tmp_path_factory.mktemp("trackers")
    gan = start_process([str(ROOT / "train_gan.py"), "--out-dir", str(root / "gan"), "--num-steps", "4", *TINY])
    vae = start_process([str(ROOT / "train_vae.py"), "--out-dir", str(root / "vae"), "--num-steps", "2",
                         *tiny_flags(latent_dim=4), "--log-every", "1", "--sample-every", "2"])
    for process in (gan, vae):
        code, _, stderr = wait(process)
        assert code == 0, stderr[-3000:]
    first_session = events(root / "gan")
    shutil.rmtree(root / "gan" / "checkpoints" / "step-000004")  # the last checkpoint lost: resume from step 2
    resumed = start_process([str(ROOT / "train_gan.py"), "--out-dir", str(root / "gan"), "--resume", "auto",
                             "--num-steps", "6"])
    code, _, stderr = wait(resumed)
    assert code == 0, stderr[-3000:]
    return root, first_session


def test_scalars_and_grids_reach_tensorboard(runs):
    root, (scalars, images) = runs
    for tag in ("d_loss", "g_loss", "d_real", "d_fake", "img_per_s"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3, 4], tag
    assert images == {"samples": [2, 4]}
    vae_scalars, vae_images = events(root / "vae")
    assert [step for step, _ in vae_scalars["loss"]] == [1, 2] and [step for step, _ in vae_scalars["kl"]] == [1, 2]
    assert vae_images == {"samples": [2], "reconstructions": [2]}


def test_a_resumed_run_continues_the_same_curves_without_duplicates(runs):
    root, (first, _) = runs
    scalars, images = events(root / "gan")
    assert [step for step, _ in scalars["d_loss"]] == [1, 2, 3, 4, 5, 6]
    assert scalars["d_loss"][:2] == first["d_loss"][:2]  # steps up to the checkpoint are the first session's
    assert images == {"samples": [2, 4, 6]}
    logged = [record["step"] for record in metrics_records(root / "gan") if "d_loss" in record]
    assert logged == [1, 2, 3, 4, 5, 6]  # metrics.jsonl too: the first session's steps 3-4 were dropped, not repeated
    config = json.loads((root / "gan" / "config.json").read_text())["config"]
    assert config["report_to"] == "tensorboard"


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_missing_tracker_package_is_one_line(tmp_path, tracker, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a))
    for command in ("train-gan", "train-vae", "train-classifier"):
        code, out, err = cli(command, "--out-dir", tmp_path / command, "--report-to", tracker)
        assert_one_line_error(code, err, f"--report-to {tracker} needs the {tracker} package", f"pip install {tracker}",
                              command=command)
        assert out == "" and not (tmp_path / command).exists()
    code, _, err = cli("train-gan", "--out-dir", tmp_path / "x", "--report-to", "tensorboard,none")
    assert_one_line_error(code, err, "--report-to must be one of tensorboard, wandb, mlflow, all, none",
                          command="train-gan")
