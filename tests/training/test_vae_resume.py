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
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genvision.losses import kl_weight

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--base-channels", "4", "--latent-dim", "4", "--batch-size", "8", "--num-grid-images", "4", "--fid-every", "0"]
COMMON = [*TINY, "--checkpoint-every", "3", "--log-every", "1", "--sample-every", "3"]

# name: (extra flags, (schedule, beta, warm-up / period)); warm-up 4 so 6 steps cover the ramp and the plateau, and
# period 4 so the cyclical weight restarts at step 4 (0-based), after the resume point.
VARIANTS = {
    "bernoulli-linear": (["--likelihood", "bernoulli", "--kl-schedule", "linear", "--beta", "0.5",
                          "--kl-warmup-steps", "4"], ("linear", 0.5, 4)),
    "gaussian-learned-cyclical-freebits": (["--likelihood", "gaussian-learned", "--kl-schedule", "cyclical",
                                            "--beta", "2.0", "--kl-warmup-steps", "4", "--free-bits", "0.5",
                                            "--seed", "7"], ("cyclical", 2.0, 4)),
}

STARTED: list[subprocess.Popen] = []


@pytest.fixture(scope="module", autouse=True)
def _no_strays():
    """A failed assertion must not leave training processes running behind the test session."""
    yield
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _start(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "train_vae.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    STARTED.append(proc)
    return proc


def _finish(proc: subprocess.Popen, what: str) -> str:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, f"{what}:\n{stderr[-3000:]}"
    return stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> (straight run folder, resumed run folder, stdout of the resuming process)."""
    from genvision.data import load_dataset

    for spec in ("mnist5k:train", "mnist5k:test"):  # decode once here, not in every process at once
        load_dataset(spec, 32, 0)
    base = tmp_path_factory.mktemp("vae-resume")
    args = {name: extra + COMMON for name, (extra, _) in VARIANTS.items()}
    straight = {name: _start(["--out-dir", str(base / name / "straight"), "--num-steps", "6", *a])
                for name, a in args.items()}
    resumed = {}
    for name, proc in straight.items():  # each resume starts as soon as its straight run is done
        _finish(proc, f"{name}: 6 steps straight")
        checkpoint = Path("checkpoints") / "step-000003"
        shutil.copytree(base / name / "straight" / checkpoint, base / name / "resumed" / checkpoint)
        resumed[name] = _start(["--out-dir", str(base / name / "resumed"), "--num-steps", "6", "--resume", "auto",
                                *args[name]])
    return {name: (base / name / "straight", base / name / "resumed", _finish(proc, f"{name}: resumed"))
            for name, proc in resumed.items()}


def assert_same(a, b, where="") -> None:
    """Recursive exact equality of plain state: tensors by torch.equal (and dtype/shape)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _draws(noise_states: torch.Tensor) -> list[torch.Tensor]:
    """The next draws of every rank's noise generator (as used for eps and binarisation)."""
    return [torch.rand(8, 4, generator=torch.Generator().set_state(state.clone())) for state in noise_states]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "weights.safetensors")


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_resume_is_bit_exact(runs, name):
    straight, resumed, stdout = runs[name]
    assert "resuming from" in stdout and "step-000003 at step 3" in stdout
    a_dir, b_dir = straight / "checkpoints" / "step-000006", resumed / "checkpoints" / "step-000006"

    a, b = _weights(a_dir), _weights(b_dir)
    assert {key.split(".", 1)[0] for key in a} == {"vae"}
    assert ("vae.log_sigma" in a) == name.startswith("gaussian-learned")
    assert_same(a, b, "weights")
    before = _weights(straight / "checkpoints" / "step-000003")
    assert any(not torch.equal(before[k], a[k]) for k in a)  # it trained on after the resume point

    sa = torch.load(a_dir / "state.pt", weights_only=True)
    sb = torch.load(b_dir / "state.pt", weights_only=True)
    assert sa["optimizer"]["state"]  # Adam moments exist
    assert_same(sa["optimizer"], sb["optimizer"], "optimizer")
    assert sa["data"] == sb["data"] == {"epoch": 0, "position": 6}
    assert sa["noise"].shape[0] == sa["world_size"] == 1
    assert_same(_draws(sa["noise"]), _draws(sb["noise"]), "next noise draws")
    earlier = torch.load(straight / "checkpoints" / "step-000003" / "state.pt", weights_only=True)
    assert not torch.equal(_draws(earlier["noise"])[0], _draws(sa["noise"])[0])  # the noise state moved on
    assert_same(sa, sb, "state")

    meta_a = json.loads((a_dir / "checkpoint.json").read_text())
    meta_b = json.loads((b_dir / "checkpoint.json").read_text())
    for meta in (meta_a, meta_b):
        del meta["config"]["resume"], meta["config"]["out_dir"]
    assert meta_a == meta_b

    def losses(run):
        return [{k: v for k, v in r.items() if k != "img_per_s"} for r in _records(run)]

    assert [r["step"] for r in losses(resumed)] == [4, 5, 6]
    assert losses(straight)[3:] == losses(resumed)
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
    assert [r["beta"] for r in _records(straight)] == pytest.approx(expected, abs=1e-6)
    assert [r["beta"] for r in _records(resumed)] == pytest.approx(expected[3:], abs=1e-6)  # steps 4-6
    if schedule == "linear":  # no free bits: loss = reconstruction + beta * kl exactly as logged
        for record in _records(straight):
            assert record["loss"] == pytest.approx(record["reconstruction"] + record["beta"] * record["kl"],
                                                   abs=1e-3)
    else:  # free bits: the optimised KL term is at least latent_dim * free_bits = 2 nats per image when beta > 0
        for record in _records(straight):
            assert record["loss"] >= record["reconstruction"] + record["beta"] * 2.0 - 1e-3, record
