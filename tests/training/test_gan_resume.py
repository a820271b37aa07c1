"""Resume: bit-exact after a clean stop, and possible after SIGKILL at any moment.

Bit-exact: 6 steps straight == 3 steps, then a fresh process with `--num-steps 6 --resume auto`. Every tensor of the
step-000006 checkpoints (weights, optimizer states, RNG states, fixed noise), the data position and the next draws of
every rank's noise generator must be equal, as must the logged losses and the sample grids. Processes that do not
depend on each other start at once (their time is mostly importing torch).
"""

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import (TINY_GAN, assert_same, assert_same_checkpoint_metadata, assert_same_checkpoints,
                     assert_same_next_noise, finish, load_state, load_weights, logged_losses, noise_images, write_pngs)

COMMON = [*TINY_GAN, "--checkpoint-every", "3", "--log-every", "1", "--sample-every", "3"]
ROLES = ("generator", "discriminator", "generator_ema")

VARIANTS = {  # a plain 3 + 3 step resume on mnist5k is checked bit for bit by test_run_folders.py ("resume")
    # 24 images, batch 8, 2 D steps per step: 3 batches an epoch, so the 12 batches of a run cross 4 epochs (the
    # checkpoint at step 3 lands exactly on an epoch boundary); flips are drawn per epoch; spectral norm has buffers.
    "hinge-r1-dsteps2-hflip": ["--loss", "hinge", "--r1-gamma", "1.0", "--d-steps", "2", "--hflip",
                               "--d-normalization", "spectral", "--dataset", "folder:{digits}", "--seed", "5"],
    # class-conditional (conditional BatchNorm, a spectrally normalised projection discriminator) on 2 class
    # subfolders of 12 images each, with the WGAN-GP penalty (interpolates of real and fake images of the same labels)
    "conditional-wgan-gp-dsteps2": ["--conditional", "--loss", "wgan-gp", "--d-steps", "2", "--hflip",
                                    "--d-normalization", "spectral", "--dataset", "folder:{classes}", "--seed", "7"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, start_process):
    """name -> (straight run folder, resumed run folder, stdout of the resuming process); all variants at once."""
    from genvision.data import load_dataset

    base = tmp_path_factory.mktemp("gan-resume")
    digits = base / "digits"
    write_pngs(noise_images(24), digits)
    classes = base / "classes"
    write_pngs(noise_images(12, seed=1), classes / "a")
    write_pngs(noise_images(12, seed=2), classes / "b")
    for spec in ("mnist5k:train", f"folder:{digits}", f"folder:{classes}"):  # decoded once here, not by every process
        load_dataset(spec, 32, 0)

    def train(*argv: str) -> subprocess.Popen:
        return start_process(["train_gan.py", *argv])

    args = {name: [a.format(digits=digits, classes=classes) for a in extra] + COMMON
            for name, extra in VARIANTS.items()}
    straight = {name: train("--out-dir", str(base / name / "straight"), "--num-steps", "6", *a)
                for name, a in args.items()}
    first = {name: train("--out-dir", str(base / name / "resumed"), "--num-steps", "3", *a) for name, a in args.items()}
    for name, proc in first.items():
        finish(proc, f"{name}: first 3 steps")
    second = {name: train("--out-dir", str(base / name / "resumed"), "--num-steps", "6", "--resume", "auto", *a)
              for name, a in args.items()}
    for name, proc in straight.items():
        finish(proc, f"{name}: 6 steps straight")
    return {name: (base / name / "straight", base / name / "resumed", finish(proc, f"{name}: resumed"))
            for name, proc in second.items()}


def _draws(noise_states: torch.Tensor) -> list[torch.Tensor]:
    """The next latent batch of every rank's noise generator."""
    return [torch.randn(8, 8, generator=torch.Generator().set_state(state.clone()))
            for state in noise_states]  # clone: set_state crashes on a row view with an offset


@pytest.mark.parametrize("name", list(VARIANTS))
def test_resume_is_bit_exact(runs, name):
    straight, resumed, stdout = runs[name]
    assert "resuming from" in stdout and "step-000003 at step 3" in stdout
    a_dir, b_dir = straight / "checkpoints" / "step-000006", resumed / "checkpoints" / "step-000006"

    # every tensor of weights.safetensors (generator, discriminator, generator_ema) and all of state.pt (optimizers,
    # scaler, global RNGs, noise, data position, fixed noise, step, best FID)
    a, _, sa, sb = assert_same_checkpoints(a_dir, b_dir)
    roles = {key.split(".", 1)[0] for key in a}
    assert roles == set(ROLES)
    before = load_weights(straight / "checkpoints" / "step-000003")
    assert any(not torch.equal(before[k], a[k]) for k in a if k.startswith("generator."))  # it trained on
    for key in ("optimizer_g", "optimizer_d"):
        assert sa[key]["state"], key  # Adam moments exist
        assert_same(sa[key], sb[key], key)
    assert sa["data"] == sb["data"]
    assert sa["data"] == {"epoch": 4, "position": 0}  # 12 batches of 3 per epoch
    assert_same_next_noise(_draws, sa, sb, load_state(straight / "checkpoints" / "step-000003"))

    # checkpoint.json, logged losses, sample grids
    assert_same_checkpoint_metadata(a_dir, b_dir)
    assert [r["step"] for r in logged_losses(resumed)] == [1, 2, 3, 4, 5, 6]
    assert logged_losses(straight) == logged_losses(resumed)
    for png in ("samples/step-000003.png", "samples/step-000006.png", "final.png"):
        assert (straight / png).read_bytes() == (resumed / png).read_bytes(), png


# ---------------------------------------------------------------------------------------------------------------
# SIGKILL at random moments: the newest committed checkpoint is always complete and a later --resume auto works.

KILL_FLAGS = [*TINY_GAN, "--checkpoint-every", "1", "--keep-checkpoints", "2", "--sample-every", "0",
              "--log-every", "1"]


def _committed_steps(run: Path) -> list[int]:
    folder = run / "checkpoints"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return sorted(int(m.group(1)) for m in map(re.compile(r"^step-(\d+)$").match, names) if m)


def _kill_all(trials: list, context: str) -> None:
    """trials: (proc, run, after_step, delay). SIGKILL each `delay` s after a checkpoint newer than after_step shows."""
    seen = [None] * len(trials)
    killed = [False] * len(trials)
    deadline = time.monotonic() + 240
    while not all(killed):
        assert time.monotonic() < deadline, f"no checkpoint appeared in time ({context})"
        for index, (proc, run, after_step, delay) in enumerate(trials):
            if killed[index]:
                continue
            if proc.poll() is not None:
                raise AssertionError(f"{run} exited ({proc.returncode}) before it was killed ({context}):\n"
                                     f"{proc.communicate()[1][-3000:]}")
            now = time.monotonic()
            if seen[index] is None and any(step > after_step for step in _committed_steps(run)):
                seen[index] = now
            if seen[index] is not None and now >= seen[index] + delay:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                assert proc.returncode == -signal.SIGKILL, (proc.returncode, context)
                killed[index] = True
        time.sleep(0.002)


def _check_loadable(run: Path, context: str) -> int:
    """Every committed checkpoint of `run` loads completely; returns the newest step."""
    from genvision.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint

    latest = latest_checkpoint(run)
    assert latest is not None, context
    for path in list_checkpoints(run):
        checkpoint = read_checkpoint(path)
        generator = checkpoint.weights("generator")
        assert generator and all(torch.isfinite(t).all() for t in generator.values()), (path, context)
        assert checkpoint.weights("discriminator") and checkpoint.weights("generator_ema"), (path, context)
        state = checkpoint.state()
        assert state["step"] == checkpoint.step == int(path.name.split("-")[-1]), (path, context)
        assert state["optimizer_g"]["state"] and state["noise"].shape[0] == 1, (path, context)
    return read_checkpoint(latest).step


def test_sigkill_at_random_moments_then_resume(tmp_path, start_process):
    from genvision.checkpoint import latest_checkpoint, list_checkpoints

    seed = random.SystemRandom().randrange(2 ** 32)
    rng = random.Random(seed)
    delays = [round(rng.uniform(0, 0.4), 3) for _ in range(3)]  # ~10 steps of ~40 ms: often mid-write
    context = f"random seed {seed}, kill delays {delays} s"
    a, b = tmp_path / "a", tmp_path / "b"

    def train(run: Path, *extra: str) -> subprocess.Popen:
        return start_process(["train_gan.py", "--out-dir", str(run), *KILL_FLAGS, *extra])

    # trials 1 and 2: fresh runs, killed at random after their first checkpoint
    _kill_all([(train(a, "--num-steps", "400"), a, 0, delays[0]),
               (train(b, "--num-steps", "400"), b, 0, delays[1])], context)
    step_a = _check_loadable(a, context)
    _check_loadable(b, context)

    # trial 3: a run resumed from a killed one (it must commit a checkpoint of its own), killed again
    _kill_all([(train(a, "--num-steps", "400", "--resume", "auto"), a, step_a, delays[2])], context)
    step_a = _check_loadable(a, context)

    # a crash while writing a checkpoint, made deterministic: a half-written temp folder and an uncommitted folder
    checkpoints = a / "checkpoints"
    (checkpoints / ".tmp-step-000999-xyz").mkdir()
    (checkpoints / ".tmp-step-000999-xyz" / "weights.safetensors").write_bytes(b"\x10\x00\x00\x00")
    (checkpoints / "step-000998").mkdir()
    (checkpoints / "step-000998" / "weights.safetensors").write_bytes(b"partial")
    (checkpoints / "step-000998" / "state.pt").write_bytes(b"partial")
    assert latest_checkpoint(a) == checkpoints / f"step-{step_a:06d}", context
    assert "step-000998" not in [p.name for p in list_checkpoints(a)]

    stdout = finish(train(a, "--num-steps", str(step_a + 2), "--resume", "auto"), f"resume of {a} ({context})")
    assert f"resuming from {checkpoints / f'step-{step_a:06d}'} at step {step_a}" in stdout, stdout
    assert not list(checkpoints.glob(".tmp-*")), context  # stale temp folders are cleaned up
    assert latest_checkpoint(a) == checkpoints / f"step-{step_a + 2:06d}"
    assert [p.name for p in list_checkpoints(a)] == [f"step-{step_a + 1:06d}", f"step-{step_a + 2:06d}"]
    _check_loadable(a, context)
