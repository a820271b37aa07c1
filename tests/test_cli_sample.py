"""`genvision sample` on tiny GAN and VAE runs: reproducible grids, PNG folders (which hold only their samples),
interpolation, truncation, reconstructions, and every bad input as one line on stderr with exit code 2 and nothing
written.

The two runs are real `train_gan.py` / `train_vae.py` subprocesses (started together); the sample commands run
in-process through `genvision.cli.main` (importing torch once), plus two real subprocesses for the exit code and the
sidecar's command line.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import (SHIPPED_CLASSIFIER, assert_one_line_error, cli, finish, run_genvision, snapshot, subprocess_env,
                     tiny_flags, wait)

TINY = [*tiny_flags(latent_dim=8), "--num-steps", "2", "--sample-every", "1"]
PADDING, SIZE = 2, 32  # make_grid's padding; the runs' resolution


@pytest.fixture(scope="module")
def runs(tmp_path_factory, start_process) -> dict[str, Path]:
    """{"gan": run folder, "vae": run folder, "cgan", "cvae": the same trained --conditional}: 2-step runs of the
    tiny models, trained at the same time."""
    base = tmp_path_factory.mktemp("sample-runs")
    env = subprocess_env(PYTHONWARNINGS="ignore")
    # The GAN: 0.2.0's gentler Adam (the default 1.2e-3 with beta1 0 saturates a 2-step tiny generator, every sample
    # then one flat image); the VAE: binarised held-out inputs (reconstruction grid)
    extra = {"gan": ["--lr", "2e-4", "--beta1", "0.5"], "vae": ["--likelihood", "bernoulli"]}
    extra.update({f"c{kind}": [*flags, "--conditional"] for kind, flags in extra.items()})
    started = {kind: start_process([f"train_{kind[-3:]}.py", "--out-dir", str(base / kind), *TINY, *extra[kind]],
                                   env=env) for kind in extra}
    for kind, process in started.items():
        finish(process, kind)
    return {kind: base / kind for kind in started}


def sample(*argv) -> tuple[int, str, str]:
    """Run `genvision sample ARGV` in-process: (exit code, stdout, stderr)."""
    return cli("sample", *argv)


def ok(*argv) -> str:
    code, stdout, stderr = sample(*argv)
    assert code == 0, stderr
    return stdout


def png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def tile(grid: np.ndarray, row: int, column: int) -> np.ndarray:
    top, left = PADDING + row * (SIZE + PADDING), PADDING + column * (SIZE + PADDING)
    return grid[top:top + SIZE, left:left + SIZE]


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_grid_is_byte_identical_across_batch_sizes(runs, tmp_path, kind):
    paths = [tmp_path / f"grid-{batch}.png" for batch in (1, 7, 64)]
    for batch, path in zip((1, 7, 64), paths):
        assert str(path) in ok(runs[kind], "--num", 20, "--seed", 4, "--batch-size", batch, "--grid", path)
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()
    assert png(paths[0]).shape == (3 * (SIZE + PADDING) + PADDING, 8 * (SIZE + PADDING) + PADDING)
    sidecar = json.loads(Path(f"{paths[0]}.json").read_text())
    checkpoint = runs[kind] / "checkpoints" / "step-000002"
    assert (sidecar["checkpoint"], sidecar["kind"], sidecar["step"], sidecar["seed"]) == (str(checkpoint), kind, 2, 4)
    assert sidecar["weights_sha256"] == hashlib.sha256((checkpoint / "weights.safetensors").read_bytes()).hexdigest()
    assert sidecar["truncation"] == 0.0 and sidecar["ema"] == (kind == "gan")


def test_out_dir_writes_numbered_pngs_and_never_overwrites(runs, tmp_path):
    folder = tmp_path / "fakes"
    assert "wrote 5 PNGs (32x32)" in ok(runs["gan"], "--num", 5, "--out-dir", folder)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    assert all(png(folder / name).shape == (SIZE, SIZE) for name in names)
    before = snapshot(folder)
    code, stdout, stderr = sample(runs["gan"], "--num", 5, "--seed", 1, "--out-dir", folder)
    assert_one_line_error(code, stderr, f"--out-dir {folder} already holds 5 entries (e.g. 000000.png)",
                          "--overwrite")
    assert stdout == "" and snapshot(folder) == before
    ok(runs["gan"], "--num", 5, "--seed", 1, "--out-dir", folder, "--overwrite")
    assert snapshot(folder).keys() == before.keys() and snapshot(folder) != before


def test_overwrite_replaces_the_whole_earlier_sample(runs, tmp_path):
    """--overwrite with fewer images removes every earlier numbered PNG (and a killed write's temp file): the folder
    then holds exactly the new sample, as if it had been empty."""
    folder, fresh = tmp_path / "fakes", tmp_path / "fresh"
    ok(runs["gan"], "--num", 6, "--out-dir", folder)
    (folder / ".000006.png.x1y2.tmp").write_bytes(b"half a PNG")
    ok(runs["gan"], "--num", 3, "--seed", 2, "--out-dir", folder, "--overwrite")
    ok(runs["gan"], "--num", 3, "--seed", 2, "--out-dir", fresh)
    assert snapshot(folder) == snapshot(fresh) and sorted(snapshot(folder)) == ["000000.png", "000001.png",
                                                                                 "000002.png"]


def test_an_empty_existing_folder_is_fine(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "wrote 2 PNGs" in ok(runs["vae"], "--num", 2, "--out-dir", tmp_path / "empty")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["000000.png", "000001.png"]


FOREIGN = {
    # name: (entries to create besides 000000.png and 000001.png of an earlier sample: file -> bytes, "/" = folder;
    #        the example the error names)
    "text-file": ({"notes.txt": b"x"}, "notes.txt"),
    "real-images": ({"real_0001.png": b"png", "real_0002.png": b"png"}, "real_0001.png"),
    "hidden-file": ({".DS_Store": b""}, ".DS_Store"),
    "subfolder": ({"extra/": b""}, "extra"),
    "folder-named-like-a-sample": ({"000002.png/": b""}, "000002.png"),
    "short-number": ({"0003.png": b"png"}, "0003.png"),
}


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("name", list(FOREIGN))
def test_out_dir_with_foreign_entries_is_refused_even_with_overwrite(runs, tmp_path, name, overwrite):
    folder = tmp_path / "mixed"
    ok(runs["gan"], "--num", 2, "--out-dir", folder)
    created, example = FOREIGN[name]
    for entry, content in created.items():
        if entry.endswith("/"):
            (folder / entry).mkdir()
        else:
            (folder / entry).write_bytes(content)
    count = 2 + len(created)
    before = snapshot(tmp_path)
    code, stdout, stderr = sample(runs["gan"], "--num", 2, "--out-dir", folder, *(["--overwrite"] if overwrite else []))
    assert_one_line_error(code, stderr, f"--out-dir {folder} holds {count} entries, {len(created)} not written by "
                          f"genvision sample (e.g. {example})", "--overwrite", command="sample")
    assert stdout == "" and snapshot(tmp_path) == before


def test_out_dir_holding_only_foreign_files_is_refused(runs, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"jpeg")
    before = snapshot(tmp_path)
    code, stdout, stderr = sample(runs["vae"], "--num", 2, "--out-dir", folder, "--overwrite")
    assert_one_line_error(code, stderr, f"--out-dir {folder} holds 1 entry, 1 not written by genvision sample "
                          "(e.g. cat.jpg)", "--overwrite")
    assert stdout == "" and snapshot(tmp_path) == before


def test_out_dir_says_what_it_wrote(runs, tmp_path):
    """As a subprocess: the one line on stdout names the count, size, files, checkpoint, step and seed."""
    folder = tmp_path / "pngs"
    result = run_genvision("sample", runs["gan"], "--num", 3, "--seed", 4, "--out-dir", folder)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    checkpoint = runs["gan"] / "checkpoints" / "step-000002"
    assert result.stdout == (f"wrote 3 PNGs (32x32) to {folder}: 000000.png .. 000002.png, 3 images of {checkpoint} "
                             "(step 2, seed 4)\n")


@pytest.mark.parametrize("kind,truncation", [("gan", "0"), ("vae", "0"), ("gan", "0.8")])
def test_interpolation_rows_end_in_the_samples_of_their_latents(runs, tmp_path, kind, truncation):
    """Under --prior normal (slerp walks N(0, I) latents; a VAE run's saved --prior gmm is refused with it, see
    tests/test_prior_cli.py)."""
    walk, singles = tmp_path / "walk.png", tmp_path / "singles"
    common = ["--seed", 7, "--truncation", truncation, "--prior", "normal"]
    assert "3 rows of 5 interpolated images" in ok(runs[kind], "--interpolate", 5, "--num", 3, "--grid", walk,
                                                   "--batch-size", 4, *common)
    ok(runs[kind], "--num", 6, "--out-dir", singles, *common)
    grid = png(walk)
    assert grid.shape == (3 * (SIZE + PADDING) + PADDING, 5 * (SIZE + PADDING) + PADDING)
    for row in range(3):
        assert np.array_equal(tile(grid, row, 0), png(singles / f"{2 * row:06d}.png"))
        assert np.array_equal(tile(grid, row, 4), png(singles / f"{2 * row + 1:06d}.png"))
    sidecar = json.loads(Path(f"{walk}.json").read_text())
    assert (sidecar["interpolate"], sidecar["num"], sidecar["nrow"]) == (5, 3, 5)


def test_truncation_is_batch_independent_and_changes_the_images(runs, tmp_path):
    paths = [tmp_path / f"t{batch}.png" for batch in (1, 64)]
    for batch, path in zip((1, 64), paths):
        ok(runs["gan"], "--num", 16, "--truncation", 0.5, "--batch-size", batch, "--grid", path)
    ok(runs["gan"], "--num", 16, "--grid", tmp_path / "plain.png")
    assert paths[0].read_bytes() == paths[1].read_bytes() != (tmp_path / "plain.png").read_bytes()
    assert json.loads(Path(f"{paths[0]}.json").read_text())["truncation"] == 0.5


def test_vae_reconstruction_grid(runs, tmp_path):
    grid_path = tmp_path / "recon.png"
    assert "10 held-out images of mnist5k:test" in ok(runs["vae"], "--reconstruct", "mnist5k:test", "--num", 10,
                                                      "--nrow", 4, "--grid", grid_path)
    grid = png(grid_path)
    assert grid.shape == (6 * (SIZE + PADDING) + PADDING, 4 * (SIZE + PADDING) + PADDING)  # 3 pairs of rows
    inputs = tile(grid, 0, 0)
    assert set(np.unique(inputs)) <= {0, 255} and inputs.any()  # a binarised digit (Bernoulli VAE)
    assert not tile(grid, 4, 2).any() and not tile(grid, 5, 3).any()  # the short last pair is padded black
    assert json.loads(Path(f"{grid_path}.json").read_text())["reconstruct"] == "mnist5k:test"


def _corrupt_copy(runs, tmp: Path, name: str, content: bytes) -> Path:
    copy = tmp / "ckpt"
    shutil.copytree(runs["gan"] / "checkpoints" / "step-000002", copy)
    (copy / name).write_bytes(content)
    return copy


BAD = {
    # name: (argv with {tmp}, {gan}, {vae}, {classifier} placeholders; words the error line must contain)
    "missing-checkpoint": (["{tmp}/nothing", "--grid", "{tmp}/g.png"], ["{tmp}/nothing", "does not exist"]),
    "corrupt-checkpoint-json": (["{tmp}/ckpt", "--grid", "{tmp}/g.png"], ["corrupt", "checkpoint.json"]),
    "corrupt-weights": (["{tmp}/ckpt", "--grid", "{tmp}/g.png"], ["weights.safetensors"]),
    "classifier-file": (["{classifier}", "--grid", "{tmp}/g.png"], ["classifier", "not a checkpoint"]),
    "run-without-checkpoint": (["{tmp}/run", "--grid", "{tmp}/g.png"], ["no committed checkpoint"]),
    "num-0": (["{gan}", "--num", "0", "--grid", "{tmp}/g.png"], ["--num", "0"]),
    "nrow-0": (["{gan}", "--nrow", "0", "--grid", "{tmp}/g.png"], ["--nrow", "0"]),
    "nrow-negative": (["{gan}", "--nrow", "-3", "--grid", "{tmp}/g.png"], ["--nrow", "-3"]),
    "batch-size-0": (["{gan}", "--batch-size", "0", "--grid", "{tmp}/g.png"], ["--batch-size"]),
    "reconstruct-gan": (["{gan}", "--reconstruct", "mnist5k:test", "--grid", "{tmp}/g.png"],
                        ["--reconstruct", "VAE", "'gan'"]),
    "reconstruct-bad-split": (["{vae}", "--reconstruct", "mnist5k:bogus", "--grid", "{tmp}/g.png"], ["bogus"]),
    "reconstruct-too-many": (["{vae}", "--reconstruct", "mnist5k:test", "--num", "501", "--grid", "{tmp}/g.png"],
                             ["--num 501", "500"]),
    "out-dir-is-file": (["{gan}", "--out-dir", "{tmp}/file.txt"], ["--out-dir", "is a file"]),
    "grid-exists": (["{gan}", "--grid", "{tmp}/file.txt"], ["exists", "--overwrite"]),
    "grid-folder-missing": (["{gan}", "--grid", "{tmp}/no/g.png"], ["does not exist"]),
    "no-output": (["{gan}"], ["--grid", "--out-dir"]),
    "both-outputs": (["{gan}", "--grid", "{tmp}/g.png", "--out-dir", "{tmp}/d"], ["exactly one"]),
    "truncation-negative": (["{gan}", "--truncation", "-1", "--grid", "{tmp}/g.png"], ["--truncation", "-1"]),
    "truncation-nan": (["{gan}", "--truncation", "nan", "--grid", "{tmp}/g.png"], ["--truncation", "nan"]),
    "interpolate-1": (["{gan}", "--interpolate", "1", "--grid", "{tmp}/g.png"], ["--interpolate", ">= 2"]),
    "interpolate-out-dir": (["{gan}", "--interpolate", "4", "--out-dir", "{tmp}/d"], ["--interpolate", "--grid"]),
    "interpolate-and-reconstruct": (["{vae}", "--interpolate", "4", "--reconstruct", "mnist5k:test", "--grid",
                                     "{tmp}/g.png"], ["at most one"]),
    "reconstruct-truncation": (["{vae}", "--reconstruct", "mnist5k:test", "--truncation", "1", "--grid",
                                "{tmp}/g.png"], ["--truncation"]),
    "unknown-flag": (["{gan}", "--grid", "{tmp}/g.png", "--temperature", "2"], ["--temperature"]),
}


def _prepare(runs, tmp: Path, name: str) -> None:
    (tmp / "file.txt").write_text("not a folder")
    if name == "corrupt-checkpoint-json":
        _corrupt_copy(runs, tmp, "checkpoint.json", b"\x00{{ not json")
    elif name == "corrupt-weights":
        _corrupt_copy(runs, tmp, "weights.safetensors", os.urandom(256))
    elif name == "run-without-checkpoint":
        (tmp / "run" / "checkpoints").mkdir(parents=True)


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(runs, tmp_path, name):
    argv, words = BAD[name]
    _prepare(runs, tmp_path, name)
    values = {"tmp": tmp_path, "gan": runs["gan"], "vae": runs["vae"], "classifier": SHIPPED_CLASSIFIER}
    before = snapshot(tmp_path)
    code, stdout, stderr = sample(*[a.format(**values) for a in argv])
    assert_one_line_error(code, stderr, *(word.format(**values) for word in words))
    assert stdout == "" and snapshot(tmp_path) == before


def test_real_processes_exit_code_and_sidecar_command(runs, tmp_path, start_process):
    grid = tmp_path / "g.png"
    commands = {"good": ["sample", str(runs["vae"]), "--num", "4", "--seed", "2", "--grid", str(grid)],
                "bad": ["sample", str(runs["gan"]), "--reconstruct", "mnist5k:test", "--grid", str(tmp_path / "x.png")]}
    env = subprocess_env(PYTHONWARNINGS="ignore")
    started = {name: start_process(["-m", "genvision", *argv], cwd=tmp_path, env=env)
               for name, argv in commands.items()}
    results = {name: wait(process, timeout=120) for name, process in started.items()}
    code, stdout, stderr = results["good"]
    # a VAE run's saved --prior (VAEConfig's default gmm) is what --prior auto samples, and the line says so
    assert code == 0 and stdout.strip() == f"wrote {grid} (4 images, step 2, seed 2, prior gmm)", stderr
    assert json.loads(Path(f"{grid}.json").read_text())["command"] == "genvision " + " ".join(commands["good"])
    code, stdout, stderr = results["bad"]
    assert code == 2 and stdout == "" and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and "--reconstruct" in stderr
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------------------------
# Class-conditional runs. A stand-in: the tiny GAN's checkpoint with class names and counts in its checkpoint.json,
# and a generator whose images are a known function of (latent, class) (the real GAN's image of z, darkened by
# the class), so what each tile and file must hold is known exactly.

CLASSES, COUNTS = ["ant", "bee", "cat"], [5, 3, 2]


@pytest.fixture()
def conditional(runs, tmp_path, monkeypatch) -> Path:
    """A checkpoint folder of a 3-class stand-in generator (`sampling.load_generator` patched for it)."""
    from genvision import sampling
    from genvision.generators import LoadedGenerator

    checkpoint = tmp_path / "cgan"
    shutil.copytree(runs["gan"] / "checkpoints" / "step-000002", checkpoint)
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    meta.update(class_names=CLASSES, class_counts=COUNTS)
    (checkpoint / "checkpoint.json").write_text(json.dumps(meta))
    real_load = sampling.load_generator

    def load(source, ema=True, device="cpu", prior="auto"):
        from genvision.checkpoint import resolve_checkpoint

        plain = real_load(runs["gan"], ema=ema, device=device, prior=prior)
        if Path(source) != checkpoint:
            return real_load(source, ema=ema, device=device, prior=prior)

        def decode(z, labels):
            return (plain.decode(z) - labels[:, None, None, None].to(z.dtype) / 2).clamp(-1, 1)

        return LoadedGenerator(decode, plain.latent_dim, plain.resolution, plain.channels,
                               resolve_checkpoint(source), plain.used_ema, class_names=tuple(CLASSES),
                               class_counts=tuple(COUNTS))

    monkeypatch.setattr(sampling, "load_generator", load)
    return checkpoint


def test_conditional_grid_is_one_row_per_class_with_the_same_noise(conditional, tmp_path):
    grid_path = tmp_path / "classes.png"
    line = ok(conditional, "--nrow", 4, "--seed", 3, "--grid", grid_path)
    assert "3 class rows of 4 images" in line
    grid = png(grid_path)
    assert grid.shape[:2] == (3 * (SIZE + PADDING) + PADDING, 4 * (SIZE + PADDING) + PADDING)
    for label, name in enumerate(CLASSES):  # row r: the samples 0..3 of class r, as --class r writes them
        folder = tmp_path / f"only-{name}"
        assert f"of class {label} ({name})" in ok(conditional, "--class", name, "--num", 4, "--seed", 3,
                                                    "--out-dir", folder)
        for column in range(4):
            assert np.array_equal(tile(grid, label, column), png(folder / name / f"{column:06d}.png"))
    assert not np.array_equal(tile(grid, 0, 0), tile(grid, 1, 0))  # the class changes down a column
    sidecar = json.loads(Path(f"{grid_path}.json").read_text())
    assert sidecar["class_names"] == CLASSES and sidecar["labels"] == [0] * 4 + [1] * 4 + [2] * 4
    code = ok(conditional, "--class", "2,ant", "--nrow", 4, "--seed", 3, "--grid", tmp_path / "two.png")
    assert "2 class rows" in code
    two = png(tmp_path / "two.png")
    assert np.array_equal(tile(two, 0, 1), tile(grid, 2, 1)) and np.array_equal(tile(two, 1, 3), tile(grid, 0, 3))


def test_conditional_out_dir_has_a_folder_per_class_and_a_sidecar(runs, conditional, tmp_path):
    import torch

    from genvision.data import list_folder
    from genvision.sampling import class_labels

    folder = tmp_path / "fakes"
    line = ok(conditional, "--num", 10, "--seed", 1, "--out-dir", folder)
    assert "10 images in the training set's class frequencies (3 classes)" in line and "samples.json" in line
    labels = class_labels(10, COUNTS, seed=1).tolist()
    sidecar = json.loads((folder / "samples.json").read_text())
    assert sidecar["labels"] == labels and sidecar["class_names"] == CLASSES and sidecar["class_folders"] == CLASSES
    assert sidecar["files"] == [f"{CLASSES[label]}/{index:06d}.png" for index, label in enumerate(labels)]
    files, read_labels, read_classes = list_folder(str(folder))  # what fid and train-classifier read
    assert read_classes == CLASSES and len(files) == 10
    assert sorted(zip(read_labels, (f.name for f in files))) == sorted(
        (label, f"{index:06d}.png") for index, label in enumerate(labels))
    assert torch.bincount(torch.tensor(read_labels)).tolist() == COUNTS
    # the same images as genvision.sample, in sample order
    import genvision

    images = genvision.sample(conditional, 10, seed=1)
    for index, label in enumerate(labels):
        assert np.array_equal(png(folder / CLASSES[label] / f"{index:06d}.png"), images[index, 0].numpy())
    chosen = genvision.sample(conditional, 4, seed=1, classes=["cat", 0])
    again = genvision.sample(conditional, 4, seed=1, classes=[2, "ant"], batch_size=1)
    assert np.array_equal(chosen.numpy(), again.numpy())
    # an earlier conditional sample is replaced whole with --overwrite, by a conditional or unconditional one
    code, _, stderr = sample(conditional, "--num", 3, "--out-dir", folder)
    assert_one_line_error(code, stderr, "already holds", "--overwrite")
    ok(conditional, "--class", "bee", "--num", 3, "--out-dir", folder, "--overwrite")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "bee", "bee/000000.png", "bee/000001.png", "bee/000002.png", "samples.json"]
    (folder / "bee" / "notes.txt").write_text("mine")
    code, _, stderr = sample(conditional, "--num", 3, "--out-dir", folder, "--overwrite")
    assert_one_line_error(code, stderr, "not written by genvision sample (e.g. bee)")
    (folder / "bee" / "notes.txt").unlink()
    ok(runs["gan"], "--num", 2, "--out-dir", folder, "--overwrite")
    assert sorted(p.name for p in folder.iterdir()) == ["000000.png", "000001.png"]


def test_conditional_interpolation_rows_keep_their_class(conditional, tmp_path):
    walk = tmp_path / "walk.png"
    assert "4 rows of 3 interpolated images of classes 2 (cat) and 1 (bee)" in ok(
        conditional, "--interpolate", 3, "--num", 4, "--class", "2", "--class", "bee", "--grid", walk)
    singles = {label: tmp_path / f"s{label}" for label in (1, 2)}
    for label, folder in singles.items():
        ok(conditional, "--class", label, "--num", 8, "--out-dir", folder)
    grid = png(walk)
    for row, label in enumerate([2, 1, 2, 1]):
        name = CLASSES[label]
        assert np.array_equal(tile(grid, row, 0), png(singles[label] / name / f"{2 * row:06d}.png"))
        assert np.array_equal(tile(grid, row, 2), png(singles[label] / name / f"{2 * row + 1:06d}.png"))


@pytest.mark.parametrize("argv,words", [
    (["--class", "dog"], ["--class 'dog' is not a class of", "0 (ant), 1 (bee), 2 (cat)"]),
    (["--class", "3"], ["--class '3' is not a class", "[0, 3)"]),
    (["--class", "1,", "--num", "2"], ["--class '' is not a class"]),
])
def test_unknown_classes_are_refused_in_one_line(conditional, tmp_path, argv, words):
    before = snapshot(tmp_path)
    code, stdout, stderr = sample(conditional, *argv, "--grid", tmp_path / "g.png")
    assert_one_line_error(code, stderr, *words, command="sample")
    assert stdout == "" and snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_class_on_an_unconditional_run_is_refused_in_one_line(runs, tmp_path, kind):
    for output in (["--grid", tmp_path / "g.png"], ["--out-dir", tmp_path / "d"]):
        code, stdout, stderr = sample(runs[kind], "--class", "3", *output)
        assert_one_line_error(code, stderr, "--class needs a class-conditional run", "unconditional",
                              command="sample")
        assert stdout == "" and list(tmp_path.iterdir()) == []
    with pytest.raises(Exception, match="--class needs a class-conditional run"):
        import genvision

        genvision.sample(runs[kind], 2, classes=[3])



# ---------------------------------------------------------------------------------------------------------------
# Real class-conditional runs (tiny, 2 steps, on mnist5k's ten digits).


def test_conditional_gan_run_samples_the_class_asked_for(runs, tmp_path):
    import genvision

    folder = tmp_path / "threes"
    line = ok(runs["cgan"], "--class", 3, "--num", 8, "--out-dir", folder)
    assert "8 images of class 3" in line and "3/000000.png .. 3/000007.png" in line
    assert sorted(p.name for p in folder.iterdir()) == ["3", "samples.json"]
    assert sorted(p.name for p in (folder / "3").iterdir()) == [f"{i:06d}.png" for i in range(8)]
    sidecar = json.loads((folder / "samples.json").read_text())
    assert sidecar["labels"] == [3] * 8 and sidecar["class_names"] == list("0123456789")
    images = genvision.sample(runs["cgan"], 8, classes=[3], batch_size=3)  # the same PNGs, any batch size
    for index in range(8):
        assert np.array_equal(png(folder / "3" / f"{index:06d}.png"), images[index, 0].numpy())
    generator = genvision.load_generator(runs["cgan"])
    assert generator.num_classes == 10 and generator.class_counts == (450,) * 10
    import torch

    from genvision.imageconv import to_uint8
    from genvision.sampling import latent_noise

    z = latent_noise(8, 8, seed=0)  # a 2-step run's images are nearly flat grey: compare them before quantising
    threes = generator(z, torch.full((8,), 3))
    assert torch.equal(torch.from_numpy(np.stack([png(folder / "3" / f"{i:06d}.png") for i in range(8)]))[:, None],
                       to_uint8(threes))
    assert not torch.equal(threes, generator(z, torch.full((8,), 4)))


def test_conditional_gan_grid_rows_are_the_classes(runs, tmp_path):
    grid_path = tmp_path / "classes.png"
    assert "10 class rows of 8 images" in ok(runs["cgan"], "--grid", grid_path)
    grid = png(grid_path)
    assert grid.shape == (10 * (SIZE + PADDING) + PADDING, 8 * (SIZE + PADDING) + PADDING)
    for label in (0, 9):
        folder = tmp_path / f"class-{label}"
        ok(runs["cgan"], "--class", label, "--num", 8, "--out-dir", folder)
        for column in range(8):
            assert np.array_equal(tile(grid, label, column), png(folder / str(label) / f"{column:06d}.png"))


def test_conditional_vae_samples_reconstructs_and_interpolates_by_class(runs, tmp_path):
    """Its saved --prior gmm is one mixture per class; reconstructions encode and decode with each input's label."""
    folder = tmp_path / "pairs"
    line = ok(runs["cvae"], "--class", "2,7", "--num", 4, "--batch-size", 3, "--out-dir", folder)
    assert "prior gmm" in line and "classes 2 and 7" in line
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png")) == [
        "2/000000.png", "2/000002.png", "7/000001.png", "7/000003.png"]
    same = tmp_path / "again"
    ok(runs["cvae"], "--class", "2", "--class", "7", "--num", 4, "--batch-size", 1, "--out-dir", same)
    assert snapshot(folder / "2") == snapshot(same / "2") and snapshot(folder / "7") == snapshot(same / "7")
    ok(runs["cvae"], "--reconstruct", "mnist5k:test", "--num", 4, "--grid", tmp_path / "recon.png")
    assert "2 rows of 3 interpolated images of class 5" in ok(
        runs["cvae"], "--interpolate", 3, "--num", 2, "--class", 5, "--prior", "normal", "--grid", tmp_path / "w.png")
