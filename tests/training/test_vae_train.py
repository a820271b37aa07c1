"""`python train_vae.py`: a tiny 3-step run leaves every artefact; `genvision evaluate-vae` scores it.

The run is a real subprocess; the evaluation runs `genvision.cli.main` in process (same parser and code path, without
a second start-up) on the run folder, i.e. its final checkpoint.
"""

import json
import math

import pytest
import torch

from helpers import TINY_VAE, cli, load_state, metrics_records, png_size_and_mode, saved_config, train_to_completion


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 3-step run: (completed process, run folder)."""
    out = tmp_path_factory.mktemp("vae-train") / "run"
    flags = [*TINY_VAE, "--num-steps", "3", "--sample-every", "1", "--log-every", "1", "--likelihood", "bernoulli"]
    return train_to_completion("train_vae.py", out, *flags), out


@pytest.fixture
def evaluation(run):
    """`genvision evaluate-vae RUN --num-importance-samples 8 --json`: (stderr, parsed JSON of stdout)."""
    _, out = run
    code, stdout, stderr = cli("evaluate-vae", out, "--num-importance-samples", "8", "--json")
    assert code == 0, stderr
    return stderr, json.loads(stdout)


def test_stdout_lines(run):
    proc, out = run
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "run folder" in lines[-1] and str(out) in lines[-1] and "FID off" in lines[-1]
    held_out = [line for line in lines if line.startswith("held-out negative ELBO")]
    assert len(held_out) == 1, proc.stdout
    assert "nats/image" in held_out[0] and "bits/dim" in held_out[0] and "mnist5k:test (500 images)" in held_out[0]


def test_config_json(run):
    _, out = run
    config = saved_config(out, "vae")
    assert config["channels"] == 1  # resolved from mnist5k (the flag default is 0)
    assert (config["num_steps"], config["base_channels"], config["latent_dim"], config["batch_size"]) == (3, 4, 4, 8)
    assert (config["likelihood"], config["kl_schedule"], config["beta"]) == ("bernoulli", "linear", 1.0)
    assert config["out_dir"] == str(out) and config["fid_every"] == 0


def test_metrics_jsonl(run):
    from genvision.losses import kl_weight

    _, out = run
    records = metrics_records(out)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        for key in ("loss", "reconstruction", "kl", "elbo", "beta", "img_per_s"):
            assert isinstance(record[key], float) and math.isfinite(record[key]), (key, record)
        assert record["reconstruction"] > 0 and record["kl"] >= 0 and record["img_per_s"] > 0
        assert record["elbo"] == pytest.approx(-(record["reconstruction"] + record["kl"]), abs=1e-4)
        # loss = reconstruction + beta * kl (no free bits); beta of the step that was taken (0-based)
        assert record["beta"] == pytest.approx(kl_weight(record["step"] - 1, "linear", 1.0, 500), abs=1e-5)
        assert record["loss"] == pytest.approx(record["reconstruction"] + record["beta"] * record["kl"], abs=1e-3)
        assert "fid" not in record


def test_checkpoint(run):
    from genvision.checkpoint import list_checkpoints, read_checkpoint

    _, out = run
    assert [p.name for p in list_checkpoints(out)] == ["step-000003"]
    folder = out / "checkpoints" / "step-000003"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "state.pt", "weights.safetensors"]
    checkpoint = read_checkpoint(folder)
    assert (checkpoint.kind, checkpoint.step, checkpoint.config["channels"]) == ("vae", 3, 1)
    assert checkpoint.roles() == {"vae", "prior"}  # the step's Gaussian-mixture prior is stored with it
    prior = checkpoint.weights("prior")
    assert prior["means"].shape == (40, 4) and prior["covariances"].shape == (40, 4, 4)  # --prior-components 40
    assert all(torch.isfinite(t).all() for t in checkpoint.weights("vae").values() if t.is_floating_point())
    state = load_state(folder)
    assert state["step"] == 3 and state["world_size"] == 1 and state["data"] == {"epoch": 0, "position": 3}
    assert state["fixed_noise"].shape == (4, 4) and state["optimizer"]["state"]


def test_images(run):
    _, out = run
    steps = (1, 2, 3)
    assert sorted(p.name for p in (out / "samples").iterdir()) == sorted(
        [f"step-00000{i}.png" for i in steps] + [f"reconstructions-step-00000{i}.png" for i in steps])
    prior = (4 * (32 + 2) + 2, 1 * (32 + 2) + 2)  # 4 prior samples of 32 px in one row, 2 px padding
    for path in [*(out / "samples").glob("step-*.png"), out / "final.png"]:
        assert png_size_and_mode(path) == (prior, "L"), path
    # 32 held-out images, 8 a row, each row of inputs above its row of reconstructions: 2 * ceil(32 / 8) rows
    rows = 2 * math.ceil(32 / 8)
    reconstructions = (8 * (32 + 2) + 2, rows * (32 + 2) + 2)
    for path in (out / "samples").glob("reconstructions-step-*.png"):
        assert png_size_and_mode(path) == (reconstructions, "L"), path
    assert png_size_and_mode(out / "losses.png")[0] == (800, 450)
    assert not [p for p in out.rglob("*.tmp")]


def test_reconstruction_grid_rows(run):
    """Input rows are a fixed random subset (seed 0) of the binarised held-out images; reconstruction rows are the
    model's means of those."""
    import numpy as np
    from PIL import Image

    from genvision.imageconv import to_uint8
    from genvision.generators import load_vae
    from genvision.vae_data import held_out_images

    _, out = run
    model, config, _ = load_vae(str(out))
    _, images = held_out_images(config)
    images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:32]]
    with torch.no_grad():
        expected_outputs = to_uint8(model.reconstruct(images[:32]))
    grid = np.asarray(Image.open(out / "samples" / "reconstructions-step-000003.png"))
    for index in range(32):
        row, column = divmod(index, 8)
        left = 2 + column * 34
        top_in, top_out = 2 + (2 * row) * 34, 2 + (2 * row + 1) * 34
        assert np.array_equal(grid[top_in:top_in + 32, left:left + 32], to_uint8(images[index])[0].numpy()), index
        assert np.array_equal(grid[top_out:top_out + 32, left:left + 32], expected_outputs[index, 0].numpy()), index


def test_summary_json(run):
    _, out = run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 3 and summary["final_fid"] is None and summary["run_dir"] == str(out)
    nats, bpd = summary["test_negative_elbo_nats"], summary["test_bits_per_dim"]
    assert math.isfinite(nats) and nats > 0
    assert bpd == pytest.approx(nats / (32 * 32 * math.log(2)))  # Bernoulli: no dequantisation offset


def test_evaluate_vae_json(run, evaluation):
    _, out = run
    stderr, report = evaluation
    assert stderr == ""
    keys = {"checkpoint", "step", "dataset", "num_images", "likelihood", "negative_elbo_nats", "elbo_bits_per_dim",
            "num_importance_samples", "iw_nll_nats", "iw_bits_per_dim"}
    assert keys <= set(report), sorted(report)
    assert report["checkpoint"] == str(out / "checkpoints" / "step-000003") and report["step"] == 3
    assert (report["dataset"], report["num_images"], report["likelihood"]) == ("mnist5k:test", 500, "bernoulli")
    assert report["num_importance_samples"] == 8
    for key in ("negative_elbo_nats", "elbo_bits_per_dim", "iw_nll_nats", "iw_bits_per_dim"):
        assert math.isfinite(report[key]) and report[key] > 0, key
    # The IWAE bound (k = 8) is at least as tight as the ELBO (k = 1), up to Monte Carlo noise.
    assert report["iw_nll_nats"] <= report["negative_elbo_nats"] + 0.5
    assert report["iw_bits_per_dim"] <= report["elbo_bits_per_dim"] + 1e-3
    # The training run's held-out negative ELBO is the same quantity on the same fixed binarisation and seed.
    summary = json.loads((out / "summary.json").read_text())
    assert report["negative_elbo_nats"] == pytest.approx(summary["test_negative_elbo_nats"], rel=1e-6)
