"""`python train_gan.py`: a tiny 3-step run leaves every artefact; `--dry-run` prints the config and writes nothing."""

import json
import math

import pytest
import torch

from helpers import (ROOT, TINY_GAN, load_state, metrics_records, png_size_and_mode, run_python, saved_config,
                     train_to_completion)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 3-step run: (completed process, run folder)."""
    out = tmp_path_factory.mktemp("gan-train") / "run"
    flags = [*TINY_GAN, "--num-steps", "3", "--sample-every", "1", "--log-every", "1"]
    return train_to_completion("train_gan.py", out, *flags), out


def test_exit_and_closing_line(run):
    proc, out = run
    assert "Traceback" not in proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert str(out) in last and "run folder" in last


def test_config_json(run):
    _, out = run
    config = saved_config(out, "gan")
    assert config["channels"] == 1  # resolved from mnist5k (the flag default is 0)
    assert (config["num_steps"], config["base_channels"], config["latent_dim"], config["batch_size"]) == (3, 4, 8, 8)
    assert config["dataset"] == "mnist5k:train" and config["out_dir"] == str(out) and config["fid_every"] == 0


def test_every_checkpoint_records_the_config_of_config_json(run):
    from genvision.checkpoint import list_checkpoints, read_checkpoint

    _, out = run
    config = saved_config(out, "gan")
    assert config["mixed_precision"] == "no"  # "auto" resolved by the accelerator (no autocast on the CPU)
    checkpoints = list_checkpoints(out)
    assert checkpoints and all(read_checkpoint(path).config == config for path in checkpoints)


def test_metrics_jsonl(run):
    _, out = run
    records = metrics_records(out)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        for key in ("d_loss", "g_loss", "d_real", "d_fake", "img_per_s"):
            assert isinstance(record[key], float) and math.isfinite(record[key]), (key, record)
        assert 0 < record["d_real"] < 1 and 0 < record["d_fake"] < 1 and record["img_per_s"] > 0
        assert "fid" not in record


def test_checkpoint(run):
    from genvision.checkpoint import list_checkpoints, read_checkpoint

    _, out = run
    assert [p.name for p in list_checkpoints(out)] == ["step-000003"]  # --checkpoint-every 1000: the final one
    folder = out / "checkpoints" / "step-000003"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "state.pt", "weights.safetensors"]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    checkpoint = read_checkpoint(folder)
    assert (checkpoint.kind, checkpoint.step, checkpoint.config["channels"]) == ("gan", 3, 1)
    assert checkpoint.roles() == {"generator", "discriminator", "generator_ema"}
    state = load_state(folder)
    assert state["step"] == 3 and state["world_size"] == 1 and state["data"] == {"epoch": 0, "position": 3}
    assert state["fixed_noise"].shape == (4, 8)
    for role in ("generator", "discriminator", "generator_ema"):
        assert all(torch.isfinite(t).all() for t in checkpoint.weights(role).values() if t.is_floating_point())


def test_images(run):
    _, out = run
    grid = (4 * (32 + 2) + 2, 1 * (32 + 2) + 2)  # 4 images of 32 px in one row, 2 px padding
    assert sorted(p.name for p in (out / "samples").iterdir()) == [f"step-00000{i}.png" for i in (1, 2, 3)]
    for path in [*sorted((out / "samples").iterdir()), out / "final.png"]:
        assert png_size_and_mode(path) == (grid, "L"), path
    size, _ = png_size_and_mode(out / "losses.png")
    assert size == (800, 450)
    assert not [p for p in out.rglob("*.tmp")]  # atomic writes left no temp files


@pytest.mark.parametrize("entry", [["train_gan.py"], ["-m", "genvision", "train-gan"]])
def test_dry_run_prints_config_and_writes_nothing(tmp_path, entry):
    out = tmp_path / "never-created"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    script = [str(ROOT / entry[0])] if entry[0].endswith(".py") else entry
    proc = run_python([*script, "--out-dir", str(out), *TINY_GAN, "--num-steps", "3", "--dry-run"], cwd=cwd,
                      timeout=120)
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    assert config["out_dir"] == str(out) and config["num_steps"] == 3 and config["base_channels"] == 4
    assert config["loss"] == "nonsaturating" and config["channels"] == 0
    assert not out.exists() and list(cwd.iterdir()) == []
