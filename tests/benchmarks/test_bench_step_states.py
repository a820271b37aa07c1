"""benchmarks/bench_step_states.py end to end: two tiny runs' checkpoints trained on in turns in one process, their
folders left as they were, and bad input refused in one line."""

import importlib.util
import re

import pytest
import torch

from helpers import ROOT, TINY_GAN, TINY_VAE, finish, kill_strays, run_python, snapshot, start

SCRIPT = ROOT / "benchmarks" / "bench_step_states.py"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny DCGAN runs (3 and 5 steps, their own learning rates) and a tiny VAE run."""
    root = tmp_path_factory.mktemp("step-states")
    gan_a, gan_b, vae = root / "a", root / "b", root / "vae"
    argv = {gan_a: ["train_gan.py", *TINY_GAN, "--num-steps", "3"],
            gan_b: ["train_gan.py", *TINY_GAN, "--num-steps", "5", "--lr", "1e-3"],
            vae: ["train_vae.py", *TINY_VAE, "--num-steps", "2", "--prior", "normal"]}
    processes = [start([*args, "--out-dir", str(out), "--report-to", "none"]) for out, args in argv.items()]
    try:  # started together: a tiny run's time is mostly importing torch
        for out, proc in zip(argv, processes):
            finish(proc, str(out))
    finally:
        kill_strays(processes)
    return gan_a, gan_b, vae


def test_two_runs_take_turns_from_their_checkpoints_and_nothing_is_written(runs):
    gans = list(runs[:2])
    before = [snapshot(run) for run in gans]
    proc = run_python([str(SCRIPT), *map(str, gans), "--block", "2", "--rounds", "3"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("CPU: ") and "3 rounds of 2 steps" in lines[0]
    # Each run continues from its own checkpoint's step, three blocks of two steps.
    assert re.search(r"^A .*/a \(from step 3\): img/s per block \d+ \d+ \d+; [\d.]+ s in all$", lines[1]), lines[1]
    assert re.search(r"^B .*/b \(from step 5\): img/s per block \d+ \d+ \d+; [\d.]+ s in all$", lines[2]), lines[2]
    ratio = float(re.fullmatch(r"B / A time per step: ([\d.]+)x", lines[3]).group(1))
    assert ratio > 0
    for label, line in zip("AB", lines[4:6]):
        assert re.fullmatch(label + r": \d+ denormal floats among [1-9]\d* \(.*\)", line), line
    assert [snapshot(run) for run in gans] == before  # the run folders are only read


def test_a_folder_without_checkpoints_or_two_models_are_one_line(runs, tmp_path):
    gan, _, vae = runs
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_python([str(SCRIPT), str(gan), str(empty)], timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "empty: no checkpoint" in proc.stderr.strip().splitlines()[-1]
    proc = run_python([str(SCRIPT), str(gan), str(vae), "--block", "1", "--rounds", "1"], timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "different models (gan, vae; expected two of one)" in proc.stderr.strip().splitlines()[-1]
    proc = run_python([str(SCRIPT), str(gan), str(gan), "--block", "0"], timeout=120)
    assert proc.returncode == 2 and "--block must be >= 1, got 0" in proc.stderr.strip().splitlines()[-1]


def test_denormal_counts_finds_them_in_weights_and_in_a_steps_gradients():
    spec = importlib.util.spec_from_file_location("bench_step_states", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Task:  # what the count reads of a training task: modules, optimizers, train_step
        def __init__(self, weight: float, upstream: float) -> None:
            self.layer = torch.nn.Linear(2, 1, bias=False)
            with torch.no_grad():
                self.layer.weight.copy_(torch.tensor([[weight, 1.0]]))
            self.same_layer = self.layer  # a module reachable twice (as GANTask's generator_fn) counts once
            self.optimizer = torch.optim.SGD(self.layer.parameters(), lr=0.0)
            self.upstream = upstream

        def train_step(self) -> None:
            (self.layer(torch.ones(3, 2)) * self.upstream).sum().backward()  # d output = upstream, per row

    tiny = torch.finfo(torch.float32).tiny
    # 2 weights; one step's output (3 floats) and its gradient (3 floats): 8 floats in all.
    assert module.denormal_counts(Task(1.0, 1.0)) == (0, 8)
    assert module.denormal_counts(Task(tiny / 4, 1.0)) == (1, 8)  # one denormal weight
    assert module.denormal_counts(Task(1.0, tiny / 8)) == (3, 8)  # the output's gradient, every row
