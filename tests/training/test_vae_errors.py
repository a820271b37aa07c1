"""`train_vae.py` / `genvision evaluate-vae` failures: bad input exits 2 with one stderr line and writes nothing; a
NaN loss exits 3 without writing anything of the failed step.

Flag errors (which fail before torch is imported) and the NaN run are real subprocesses, all started at once; the
cases that need torch loaded run `genvision.cli.main` in process (same parser, same error path, no start-up cost).
Each case has its own folder, which is also its working directory.
"""

import dataclasses
from pathlib import Path

import pytest
import torch

from genvision.checkpoint import list_checkpoints, save_checkpoint
from genvision.config import GANConfig
from helpers import ROOT, TINY_VAE, assert_one_line_error, cli, metrics_records, snapshot, wait

TRAIN = [str(ROOT / "train_vae.py"), *TINY_VAE, "--num-steps", "2", "--out-dir", "{tmp}/run"]
NAN_FAULT = ROOT / "tests" / "_nan_fault.py"  # the run with a NaN loss injected at a step

SUBPROCESS_CASES = {
    # name: (argv after the interpreter, command name in the error line, words the error line must contain)
    "beta-negative": ([*TRAIN, "--beta", "-1"], "train-vae", ["--beta", ">= 0", "-1"]),
    "likelihood-foo": ([*TRAIN, "--likelihood", "foo"], "train-vae", ["--likelihood", "'foo'", "bernoulli"]),
    "kl-schedule-foo": ([*TRAIN, "--kl-schedule", "foo"], "train-vae", ["--kl-schedule", "'foo'", "cyclical"]),
}
IN_PROCESS_CASES = {
    # name: (genvision argv, command name in the error line, words the error line must contain)
    "resume-gan": (["train-vae", *TRAIN[1:], "--resume", "{tmp}/gan"], "train-vae",
                   ["--resume", "{tmp}/gan", "'gan'", "'vae'"]),
    "evaluate-gan-checkpoint": (["evaluate-vae", "{tmp}/gan"], "evaluate-vae", ["{tmp}/gan", "'gan'", "'vae'"]),
    "evaluate-gan-run-folder": (["evaluate-vae", "{tmp}/gan-run"], "evaluate-vae",
                                ["{tmp}/gan-run/checkpoints/step-000002", "'gan'", "'vae'"]),
    "importance-samples-0": (["evaluate-vae", "{tmp}/gan", "--num-importance-samples", "0"], "evaluate-vae",
                             ["--num-importance-samples", ">= 1", "0"]),
}


def _gan_checkpoint(folder: Path) -> None:
    config = GANConfig(base_channels=4, latent_dim=4, batch_size=8, num_grid_images=4, fid_every=0, channels=1)
    save_checkpoint(folder, {"kind": "gan", "step": 2, "config": dataclasses.asdict(config)},
                    {"generator": {"w": torch.zeros(1)}}, {})


def _prepare(tmp: Path) -> dict:
    _gan_checkpoint(tmp / "gan")
    _gan_checkpoint(tmp / "gan-run" / "checkpoints" / "step-000002")
    return snapshot(tmp)


@pytest.fixture(scope="module")
def results(tmp_path_factory, start_process):
    """Start the subprocess cases and the NaN run at once; name -> (returncode, stdout, stderr, folder, snapshot)."""
    from genvision.data import load_dataset

    for spec in ("mnist5k:train", "mnist5k:test"):  # decoded once here (a decoding bar would be a stderr line)
        load_dataset(spec, 32, 0)
    started = {}
    for name, (argv, _, _) in SUBPROCESS_CASES.items():
        tmp = tmp_path_factory.mktemp(name)
        before = _prepare(tmp)
        started[name] = (start_process([a.replace("{tmp}", str(tmp)) for a in argv], cwd=tmp), tmp, before)
    nan_tmp = tmp_path_factory.mktemp("nan")
    nan_command = [str(NAN_FAULT), "2", "all", "train-vae", *(a.replace("{tmp}", str(nan_tmp)) for a in TRAIN[1:]),
                   "--num-steps", "4", "--checkpoint-every", "1", "--log-every", "1", "--sample-every", "1"]
    started["nan"] = (start_process(nan_command, cwd=nan_tmp), nan_tmp, None)
    return {name: (*wait(proc), tmp, before) for name, (proc, tmp, before) in started.items()}


def _check_error(code: int, stdout: str, stderr: str, tmp: Path, before: dict, command: str, words: list[str]):
    assert_one_line_error(code, stderr, *(word.replace("{tmp}", str(tmp)) for word in words), command=command)
    assert stdout == ""
    assert not (tmp / "run").exists()
    assert snapshot(tmp) == before  # nothing written, nothing changed, in the case folder (the cwd) too


@pytest.mark.parametrize("name", list(SUBPROCESS_CASES))
def test_bad_input_subprocess(results, name):
    _, command, words = SUBPROCESS_CASES[name]
    _check_error(*results[name], command, words)


@pytest.mark.parametrize("name", list(IN_PROCESS_CASES))
def test_bad_input_in_process(tmp_path, monkeypatch, name):
    argv, command, words = IN_PROCESS_CASES[name]
    before = _prepare(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = cli(*(a.replace("{tmp}", str(tmp_path)) for a in argv))
    _check_error(code, stdout, stderr, tmp_path, before, command, words)


def test_nan_loss_stops_with_exit_3(results):
    code, stdout, stderr, tmp, _ = results["nan"]
    out = tmp / "run"
    assert code == 3, f"exit {code}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr
    last = stderr.rstrip("\n").split("\n")[-1]
    assert "\r" not in last and last.startswith("genvision train-vae: error: "), repr(last)
    assert "non-finite loss at step 2" in last and str(out / "checkpoints" / "step-000001") in last, last
    # nothing of step 2 or later was written: no checkpoint, log line, grid, final image, summary
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000001"]
    assert [p.name for p in list_checkpoints(out)] == ["step-000001"]
    assert [record["step"] for record in metrics_records(out)] == [1]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["reconstructions-step-000001.png",
                                                                   "step-000001.png"]
    assert not (out / "final.png").exists() and not (out / "summary.json").exists()
    assert "run folder" not in stdout and "held-out negative ELBO" not in stdout
