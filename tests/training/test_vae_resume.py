"""VAE resume is bit-exact, and the KL weight of every step follows `losses.kl_weight`.

6 steps straight == 3 steps, then a fresh process with `--num-steps 6 --resume auto`: every tensor of the step-000006
checkpoints (weights, Adam state, RNG states, fixed noise), the data position, the next draw of the noise generator
(posterior samples and dynamic binarisation), the logged losses and every grid must be equal. Two variants: Bernoulli
likelihood with a linear KL warm-up, and a learned-sigma Gaussian with a cyclical schedule and free bits.

The 3 steps are those of the straight run: its step-000003 checkpoint (committed at step 3, as a 3-step run would
commit it) is copied into an empty run folder, which a fresh process resumes with `--resume auto`. That keeps this
module to 4 training processes on a 2-core machine; tests/training/test_gan_resume.py covers the shared schedule's
stop-at-k-then-resume path (metrics.jsonl appended to, grids of both processes) with separate processes.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from genvision.losses import kl_weight
from helpers import (TINY_VAE, assert_same, assert_same_checkpoint_metadata, assert_same_checkpoints,
                     assert_same_next_noise, finish, load_state, load_weights, logged_losses, metrics_records)

COMMON = [*TINY_VAE, "--checkpoint-every", "3", "--log-every", "1", "--sample-every", "3"]

# name: (extra flags, (schedule, beta, warm-up / period)); warm-up 4 so 6 steps cover the ramp and the plateau, and
# period 4 so the cyclical weight restarts at step 4 (0-based), after the resume point.
VARIANTS = {
    "bernoulli-linear": (["--likelihood", "bernoulli", "--kl-schedule", "linear", "--beta", "0.5",
                          "--kl-warmup-steps", "4"], ("linear", 0.5, 4)),
    "gaussian-learned-cyclical-freebits": (["--likelihood", "gaussian-learned", "--kl-schedule", "cyclical",
                                            "--beta", "2.0", "--kl-warmup-steps", "4", "--free-bits", "0.5",
                                            "--seed", "7"], ("cyclical", 2.0, 4)),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, start_process):
    """name -> (straight run folder, resumed run folder, stdout of the resuming process)."""
    from genvision.data import load_dataset

    for spec in ("mnist5k:train", "mnist5k:test"):  # decode once here, not in every process at once
        load_dataset(spec, 32, 0)
    base = tmp_path_factory.mktemp("vae-resume")

    def train(*argv: str) -> subprocess.Popen:
        return start_process(["train_vae.py", *argv])

    args = {name: extra + COMMON for name, (extra, _) in VARIANTS.items()}
    straight = {name: train("--out-dir", str(base / name / "straight"), "--num-steps", "6", *a)
                for name, a in args.items()}
    resumed = {}
    for name, proc in straight.items():  # each resume starts as soon as its straight run is done
        finish(proc, f"{name}: 6 steps straight")
        checkpoint = Path("checkpoints") / "step-000003"
        shutil.copytree(base / name / "straight" / checkpoint, base / name / "resumed" / checkpoint)
        resumed[name] = train("--out-dir", str(base / name / "resumed"), "--num-steps", "6", "--resume", "auto",
                              *args[name])
    return {name: (base / name / "straight", base / name / "resumed", finish(proc, f"{name}: resumed"))
            for name, proc in resumed.items()}


def _draws(noise_states: torch.Tensor) -> list[torch.Tensor]:
    """The next draws of every rank's noise generator (as used for eps and binarisation)."""
    return [torch.rand(8, 4, generator=torch.Generator().set_state(state.clone())) for state in noise_states]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_resume_is_bit_exact(runs, name):
    straight, resumed, stdout = runs[name]
    assert "resuming from" in stdout and "step-000003 at step 3" in stdout
    a_dir, b_dir = straight / "checkpoints" / "step-000006", resumed / "checkpoints" / "step-000006"

    a, _, sa, sb = assert_same_checkpoints(a_dir, b_dir)  # every tensor of weights.safetensors, all of state.pt
    assert {key.split(".", 1)[0] for key in a} == {"vae", "prior"}  # the mixture refitted after resuming: the same
    assert ("vae.log_sigma" in a) == name.startswith("gaussian-learned")
    before = load_weights(straight / "checkpoints" / "step-000003")
    assert any(not torch.equal(before[k], a[k]) for k in a)  # it trained on after the resume point
    assert sa["optimizer"]["state"]  # Adam moments exist
    assert_same(sa["optimizer"], sb["optimizer"], "optimizer")
    assert sa["data"] == sb["data"] == {"epoch": 0, "position": 6}
    assert_same_next_noise(_draws, sa, sb, load_state(straight / "checkpoints" / "step-000003"))

    assert_same_checkpoint_metadata(a_dir, b_dir)
    assert [r["step"] for r in logged_losses(resumed)] == [4, 5, 6]
    assert logged_losses(straight)[3:] == logged_losses(resumed)
    assert sorted(p.name for p in (resumed / "samples").iterdir()) == ["reconstructions-step-000006.png",
                                                                       "step-000006.png"]
    for png in ("samples/step-000006.png", "samples/reconstructions-step-000006.png", "final.png"):
        assert (straight / png).read_bytes() == (resumed / png).read_bytes(), png
    summary_a = json.loads((straight / "summary.json").read_text())
    summary_b = json.loads((resumed / "summary.json").read_text())
    assert summary_a["test_negative_elbo_nats"] == summary_b["test_negative_elbo_nats"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_beta_column_follows_kl_weight(runs, name):
    """Step s (1-based) of metrics.jsonl was taken with kl_weight(s - 1, ...), in the straight and resumed run."""
    schedule, beta, warmup = VARIANTS[name][1]
    expected = [kl_weight(step, schedule, beta, warmup) for step in range(6)]
    if schedule == "linear":
        assert expected == [0.0, 0.125, 0.25, 0.375, 0.5, 0.5]  # ramp over 4 steps, then the plateau
    else:
        assert expected == [0.0, 1.0, 2.0, 2.0, 0.0, 1.0]  # rise over half of each 4-step cycle, then restart
    straight, resumed, _ = runs[name]
    assert [r["beta"] for r in metrics_records(straight)] == pytest.approx(expected, abs=1e-6)
    assert [r["beta"] for r in metrics_records(resumed)] == pytest.approx(expected[3:], abs=1e-6)  # steps 4-6
    if schedule == "linear":  # no free bits: loss = reconstruction + beta * kl exactly as logged
        for record in metrics_records(straight):
            assert record["loss"] == pytest.approx(record["reconstruction"] + record["beta"] * record["kl"],
                                                   abs=1e-3)
    else:  # free bits: the optimised KL term is at least latent_dim * free_bits = 2 nats per image when beta > 0
        for record in metrics_records(straight):
            assert record["loss"] >= record["reconstruction"] + record["beta"] * 2.0 - 1e-3, record
