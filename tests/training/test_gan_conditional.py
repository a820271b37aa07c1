"""Class-conditional DCGAN runs (--conditional): an unlabelled or one-class dataset refused in one line before
anything is written (--dry-run too), and a tiny run's class metadata, checkpoint and one-row-per-class grid."""

import json

import pytest
import torch
from PIL import Image

from genvision.checkpoint import read_checkpoint
from helpers import TINY_GAN, assert_one_line_error, cli, noise_images, train_to_completion, write_pngs


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{"loose": images directly in the folder, "one": one class subfolder, "two": two class subfolders}."""
    base = tmp_path_factory.mktemp("conditional-folders")
    write_pngs(noise_images(4), base / "loose")
    write_pngs(noise_images(4), base / "one" / "cats")
    write_pngs(noise_images(4, seed=1), base / "two" / "cats")
    write_pngs(noise_images(4, seed=2), base / "two" / "dogs")
    return base


@pytest.mark.parametrize("command", ["train-gan", "train-vae"])
@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("layout, words", [("loose", ["not in class subfolders", "1 class"]),
                                            ("one", ["1 class subfolder (cats)"])])
def test_unlabelled_or_one_class_dataset_is_refused(folders, tmp_path, command, dry_run, layout, words):
    out = tmp_path / "run"
    flags = ["--dry-run"] if dry_run else []
    code, _, stderr = cli(command, "--conditional", "--dataset", f"folder:{folders / layout}", "--out-dir", out,
                          "--fid-every", "0", *flags)
    assert_one_line_error(code, stderr, "--dataset", str(folders / layout), *words)
    assert not out.exists()  # nothing written


def test_dry_run_of_a_labelled_folder_passes(folders, tmp_path):
    code, stdout, stderr = cli("train-gan", "--conditional", "--dataset", f"folder:{folders / 'two'}", "--out-dir",
                               tmp_path / "run", "--fid-every", "0", "--dry-run")
    assert code == 0, stderr
    assert not (tmp_path / "run").exists()


def test_tiny_conditional_run_records_its_classes(tmp_path):
    out = tmp_path / "run"
    train_to_completion("train_gan.py", out, *TINY_GAN, "--conditional", "--num-steps", "2", "--checkpoint-every",
                        "2", "--sample-every", "2", "--log-every", "1")
    checkpoint = read_checkpoint(out / "checkpoints" / "step-000002")
    assert checkpoint.class_names == tuple("0123456789") and checkpoint.class_counts == (450,) * 10
    assert checkpoint.config["conditional"] is True
    saved = json.loads((out / "config.json").read_text())
    assert saved["class_names"] == list("0123456789") and saved["class_counts"] == [450] * 10
    weights = checkpoint.weights("generator_ema")
    assert weights["layers.1.gamma.weight"].shape == (10, 16) and "discriminator" in checkpoint.roles()
    assert checkpoint.weights("discriminator")["embed.weight"].shape == (10, 16 * 4 * 4)
    # the grid: one row per class (10 rows of 8 fixed draws, the same draws in every row)
    grid = Image.open(out / "samples" / "step-000002.png")
    assert grid.size == (2 + 8 * 34, 2 + 10 * 34)
    fixed = checkpoint.state()["fixed_noise"]
    assert fixed.shape == (80, 8) and torch.equal(fixed[:8], fixed[8:16])


def test_older_checkpoints_have_no_classes(tmp_path):
    out = tmp_path / "run"
    train_to_completion("train_gan.py", out, *TINY_GAN, "--num-steps", "1")
    checkpoint = read_checkpoint(out / "checkpoints" / "step-000001")
    assert checkpoint.class_names == () and checkpoint.class_counts == ()
    assert "class_names" not in json.loads((out / "config.json").read_text())
    # --conditional on resume of an unconditional run: another architecture, refused in one line
    code, _, stderr = cli("train-gan", "--out-dir", out, "--resume", "auto", "--num-steps", "2", "--conditional",
                          *TINY_GAN)
    assert_one_line_error(code, stderr, "conditional False vs True")
