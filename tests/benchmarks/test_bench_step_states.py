"""benchmarks/bench_step_states.py end to end: two tiny runs' checkpoints trained on in turns in one process, their
folders left as they were, and bad input refused in one line."""

import re

from helpers import ROOT, TINY_GAN, TINY_VAE, run_python, snapshot, train_to_completion

SCRIPT = ROOT / "benchmarks" / "bench_step_states.py"


def test_two_runs_take_turns_from_their_checkpoints_and_nothing_is_written(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    train_to_completion("train_gan.py", runs[0], *TINY_GAN, "--num-steps", "3", "--report-to", "none")
    train_to_completion("train_gan.py", runs[1], *TINY_GAN, "--num-steps", "5", "--lr", "1e-3", "--report-to", "none")
    before = [snapshot(run) for run in runs]
    proc = run_python([str(SCRIPT), *map(str, runs), "--block", "2", "--rounds", "3"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("CPU: ") and "3 rounds of 2 steps" in lines[0]
    # Each run continues from its own checkpoint's step, three blocks of two steps.
    assert re.search(r"^A .*/a \(from step 3\): img/s per block \d+ \d+ \d+; [\d.]+ s in all$", lines[1]), lines[1]
    assert re.search(r"^B .*/b \(from step 5\): img/s per block \d+ \d+ \d+; [\d.]+ s in all$", lines[2]), lines[2]
    ratio = float(re.fullmatch(r"B / A time per step: ([\d.]+)x", lines[3]).group(1))
    assert ratio > 0
    assert [snapshot(run) for run in runs] == before  # the run folders are only read


def test_a_folder_without_checkpoints_or_two_models_are_one_line(tmp_path):
    gan, vae = tmp_path / "gan", tmp_path / "vae"
    train_to_completion("train_gan.py", gan, *TINY_GAN, "--num-steps", "2", "--report-to", "none")
    train_to_completion("train_vae.py", vae, *TINY_VAE, "--num-steps", "2", "--prior", "normal", "--report-to", "none")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_python([str(SCRIPT), str(gan), str(empty)], timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "empty: no checkpoint" in proc.stderr.strip().splitlines()[-1]
    proc = run_python([str(SCRIPT), str(gan), str(vae), "--block", "1", "--rounds", "1"], timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "different models (GANTask, VAETask)" in proc.stderr.strip().splitlines()[-1]
    proc = run_python([str(SCRIPT), str(gan), str(gan), "--block", "0"], timeout=120)
    assert proc.returncode == 2 and "--block must be >= 1, got 0" in proc.stderr.strip().splitlines()[-1]
