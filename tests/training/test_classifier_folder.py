"""`genvision train-classifier` on `folder:PATH` datasets: class subfolders required, a seeded stratified held-out
split when the held-out spec is --dataset itself, and one run per --out-dir (the runs that train as subprocesses;
the refusals, which stop before any data is read, through `genvision.cli.main` in process; the split's pieces
in process)."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, cli, run_genvision, snapshot
from PIL import Image

from genvision.data import InMemoryBatches, load_dataset
from genvision.training.classifier import holdout_count, holdout_split, same_dataset, split_dataset
from genvision.weights import load_classifier

TINY = ["--epochs", "1", "--base-channels", "4", "--num-features", "8", "--batch-size", "8"]
CLASS_SIZES = {"circle": 10, "stripes": 15, "zigzag": 20}  # 10% rounded half up: 1 + 2 + 2 = 5 held out
RUN_CHOICES = "start afresh with --overwrite (removes them) or choose another --out-dir"


def pattern(class_index: int, image_index: int) -> np.ndarray:
    """A 32x32 grayscale image: a class-dependent pattern, with the image index written into the top row so that
    every image of a folder is distinct (which lets a test tell the held-out images from the training ones)."""
    rows, cols = np.mgrid[0:32, 0:32]
    if class_index == 0:
        image = ((rows - 16) ** 2 + (cols - 16) ** 2 < (6 + image_index % 5) ** 2) * 220
    elif class_index == 1:
        image = ((rows + image_index) // 4 % 2) * 220
    else:
        image = ((cols + image_index) // 4 % 2) * 220
    image = image.astype(np.uint8)
    image[0, :8] = [(image_index >> bit & 1) * 255 for bit in range(8)]
    image[0, 8:12] = class_index * 60
    return image


def write_folder(root: Path, class_sizes: dict[str, int], flat: bool = False) -> Path:
    """PNGs in root/CLASS/NNN.png (or all directly in root when `flat`); returns root."""
    for class_index, (name, size) in enumerate(class_sizes.items()):
        folder = root if flat else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for image_index in range(size):
            Image.fromarray(pattern(class_index, image_index), "L").save(folder / f"{name}-{image_index:03d}.png")
    return root


def train(*args: str):
    """`python -m genvision train-classifier ARGS` from the repository root."""
    return run_genvision("train-classifier", *args, timeout=300)


def refused(*args: str) -> subprocess.CompletedProcess:
    """`genvision train-classifier ARGS` in process, for a case refused before training: (returncode, stdout,
    stderr) as a subprocess's."""
    return subprocess.CompletedProcess(args, *cli("train-classifier", *args))


def one_error_line(result) -> str:
    """The single stderr line of a refused run (exit 2, no traceback)."""
    return assert_one_line_error(result.returncode, result.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Refusals, before anything is written.


@pytest.mark.parametrize("layout, expected", [
    ({"flat": True, "class_sizes": {"a": 6, "b": 6}},
     "the images of folder {images} are not in class subfolders (all 12 lie directly in it), so it has 1 class"),
    ({"class_sizes": {"only": 12}}, "folder {images} has 1 class subfolder (only)"),
])
def test_a_folder_of_one_class_is_refused_before_anything_is_written(tmp_path, layout, expected):
    images = write_folder(tmp_path / "images", **layout)
    out = tmp_path / "run"
    line = one_error_line(refused("--dataset", f"folder:{images}", "--out-dir", str(out), *TINY))
    assert line == (f"genvision train-classifier: error: --dataset folder:{images}: {expected.format(images=images)}; "
                    f"expected images in one subfolder per class (at least 2 classes), e.g. {images}/CLASS/*.png")
    assert not out.exists()


@pytest.mark.parametrize("fraction", ["0", "1"])
def test_holdout_fraction_outside_the_open_interval_is_refused(tmp_path, fraction):
    images = write_folder(tmp_path / "digits", CLASS_SIZES)
    out = tmp_path / "run"
    line = one_error_line(refused("--dataset", f"folder:{images}", "--out-dir", str(out), "--holdout-fraction",
                                fraction, *TINY))
    assert line == f"genvision train-classifier: error: --holdout-fraction must be in (0, 1), got {float(fraction)!r}"
    assert not out.exists()


def test_bad_eval_dataset_spec_is_refused_naming_the_flag(tmp_path):
    images = write_folder(tmp_path / "digits", CLASS_SIZES)
    out = tmp_path / "run"
    line = one_error_line(refused("--dataset", f"folder:{images}", "--eval-dataset", "nope", "--out-dir", str(out),
                                *TINY))
    assert line.startswith("genvision train-classifier: error: --eval-dataset nope: unknown dataset 'nope'")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# The held-out split.


def test_folder_with_class_subfolders_reports_held_out_accuracy_on_images_it_did_not_train_on(tmp_path):
    images = write_folder(tmp_path / "digits", CLASS_SIZES)
    out = tmp_path / "run"
    result = train("--dataset", f"folder:{images}", "--out-dir", str(out), *TINY, "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("epoch  1/2") and lines[1].startswith("epoch  2/2")
    assert "held-out accuracy" in lines[1] and "(10% held out per class)" in lines[1]
    assert "test accuracy" not in result.stdout
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    held_out_count = sum(holdout_count(size, 0.1) for size in CLASS_SIZES.values())
    assert held_out_count == 5
    assert lines[-1] == (f"final held-out accuracy {record['test_accuracy']:.4f} on 10% of folder:{images} held out "
                         f"per class (seed 0, 5 images); weights: {out / 'classifier.safetensors'}")
    assert round(record["test_accuracy"] * held_out_count, 6).is_integer()  # a share of the 5 held-out images
    _, info = load_classifier(out / "classifier.safetensors")
    assert info["eval_dataset"] == f"folder:{images} (10% held out per class, seed 0)"
    assert info["held_out_images"] == 5 and info["train_images"] == sum(CLASS_SIZES.values()) - 5
    assert info["holdout_fraction"] == 0.1 and info["holdout_seed"] == 0
    assert info["test_accuracy"] == record["test_accuracy"]


def test_held_out_split_is_seeded_stratified_and_never_in_a_training_batch(tmp_path):
    images = write_folder(tmp_path / "digits", CLASS_SIZES)
    data = load_dataset(f"folder:{images}", 32, 0, cache_dir=tmp_path / "cache")
    train_index, held_index = holdout_split(data.labels, data.num_classes, 0.1, seed=0)
    assert len(held_index) == 5 and len(train_index) == 40
    assert sorted(set(train_index.tolist()) | set(held_index.tolist())) == list(range(45))
    assert torch.bincount(data.labels[held_index], minlength=3).tolist() == [1, 2, 2]
    again_train, again_held = holdout_split(data.labels, data.num_classes, 0.1, seed=0)
    assert torch.equal(again_train, train_index) and torch.equal(again_held, held_index)
    other_seed = [holdout_split(data.labels, data.num_classes, 0.1, seed=seed)[1] for seed in range(1, 6)]
    assert any(not torch.equal(held, held_index) for held in other_seed)

    train_part, held_part = split_dataset(data, 0.1, seed=0)
    held_images = {bytes(image.numpy()) for image in held_part.images}
    assert len(held_images) == 5 and not held_images & {bytes(image.numpy()) for image in train_part.images}
    seen = set()
    for rank in range(2):  # two processes share the training part between them, and never see a held-out image
        batches = InMemoryBatches(train_part, 8, seed=0, rank=rank, world_size=2)
        for _ in range(2 * len(batches)):
            batch, _ = next(batches)
            seen |= {bytes(((image + 1) * 127.5).round().to(torch.uint8).numpy()) for image in batch}
    assert seen and not seen & held_images


@pytest.mark.parametrize(("class_size", "fraction", "expected"),
                         [(1, 0.5, 0), (2, 0.1, 1), (2, 0.9, 1), (10, 0.1, 1), (15, 0.1, 2), (25, 0.1, 3),
                          (20, 0.25, 5), (4, 0.99, 3)])
def test_holdout_count_rounds_half_up_keeps_one_and_never_takes_a_whole_class(class_size, fraction, expected):
    assert holdout_count(class_size, fraction) == expected


def test_same_dataset_compares_parsed_specs():
    assert same_dataset("folder:x", "folder:x/") and same_dataset("mnist5k", "mnist5k:train")
    assert not same_dataset("mnist5k:train", "mnist5k:test") and not same_dataset("folder:x", "folder:y")


# ---------------------------------------------------------------------------------------------------------------
# One run per --out-dir.


def refused_over_an_earlier_run(tmp_path: Path, files: dict[str, str]) -> tuple[Path, Path]:
    """(images folder, --out-dir): the out-dir holds `files` (name -> text); a run into it is refused in one line
    naming the run files among them, and leaves the folder byte-identical."""
    images = write_folder(tmp_path / "digits", CLASS_SIZES)
    out = tmp_path / "run"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = snapshot(out)
    line = one_error_line(refused("--dataset", f"folder:{images}", "--out-dir", str(out), *TINY))
    held = ", ".join(name for name in ("config.json", "metrics.jsonl") if name in files)
    assert line == f"genvision train-classifier: error: --out-dir {out} holds an earlier run ({held}); {RUN_CHOICES}"
    assert snapshot(out) == before
    return images, out


def test_out_dir_with_an_earlier_run_is_refused_then_started_afresh_with_overwrite(tmp_path):
    images, out = refused_over_an_earlier_run(tmp_path, {
        "config.json": '{"kind": "classifier", "earlier": true}\n', "metrics.jsonl": '{"epoch": 99, "stray": true}\n',
        "notes.txt": "not a run file\n"})
    result = train("--dataset", f"folder:{images}", "--out-dir", str(out), *TINY, "--overwrite")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"--overwrite: removed the earlier run's config.json, metrics.jsonl from {out}"
    metrics = [json.loads(text) for text in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in metrics] == [1] and "stray" not in metrics[0]
    assert json.loads((out / "config.json").read_text())["config"]["dataset"] == f"folder:{images}"
    assert (out / "classifier.safetensors").is_file() and (out / "notes.txt").read_text() == "not a run file\n"


def test_out_dir_holding_only_metrics_is_an_earlier_run_too(tmp_path):
    refused_over_an_earlier_run(tmp_path, {"metrics.jsonl": '{"epoch": 99, "stray": true}\n'})
