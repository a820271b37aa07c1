"""`train_gan.py` failures: bad input exits 2 with one stderr line and writes nothing; a NaN loss exits 3.

Flag errors (which fail before torch is imported) and the NaN run are real subprocesses, all started at once; the
cases that need torch loaded (a run folder, a checkpoint to read) run `genvision.cli.main` in process (same parser,
same error path, no start-up cost).
"""

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from genvision.checkpoint import list_checkpoints, save_checkpoint
from genvision.config import GANConfig
from helpers import SHIPPED_CLASSIFIER, TINY_GAN, assert_one_line_error, cli, metrics_records, snapshot, wait

FLAGS = [*TINY_GAN, "--num-steps", "2"]

CASES = {
    # name: (extra argv, words the error line must contain); "{tmp}" is the case's folder
    "loss-foo": (["--loss", "foo"], ["--loss", "foo", "nonsaturating"]),
    "resolution-48": (["--resolution", "48"], ["--resolution", "48"]),
    "num-steps-0": (["--num-steps", "0"], ["--num-steps", "> 0", "0"]),
    "num-steps-negative": (["--num-steps", "-1"], ["--num-steps", "-1"]),
    "batch-size-0": (["--batch-size", "0"], ["--batch-size", "0"]),
    "keep-checkpoints-1": (["--keep-checkpoints", "1"], ["--keep-checkpoints", ">= 2", "1"]),
    "out-dir-is-a-file": (["--out-dir", "{tmp}/a-file"], ["--out-dir", "{tmp}/a-file", "is a file"]),
    "resume-vae": (["--resume", "{tmp}/vae"], ["{tmp}/vae", "'vae'", "'gan'"]),
    "resume-classifier": (["--resume", str(SHIPPED_CLASSIFIER)],
                          [str(SHIPPED_CLASSIFIER), "weights file", "classifier"]),
    "resume-garbage-json": (["--resume", "{tmp}/garbage"], ["{tmp}/garbage", "corrupt", "checkpoint.json"]),
    "resume-random-bytes": (["--resume", "{tmp}/random.bin"], ["{tmp}/random.bin", "not a genvision checkpoint"]),
    "resume-other-base-channels": (["--resume", "{tmp}/wide"], ["{tmp}/wide", "base_channels", "8", "4"]),
}
IN_PROCESS = {"out-dir-is-a-file", "resume-vae", "resume-classifier", "resume-garbage-json", "resume-random-bytes",
              "resume-other-base-channels"}


def _gan_meta(**changes) -> dict:
    config = GANConfig(base_channels=4, latent_dim=8, batch_size=8, num_grid_images=4, fid_every=0, channels=1)
    return {"kind": "gan", "step": 2, "config": {**dataclasses.asdict(config), **changes}}


def _prepare(tmp: Path, name: str) -> None:
    """Fabricate the files a case points at."""
    if name == "out-dir-is-a-file":
        (tmp / "a-file").write_text("precious\n")
    elif name == "resume-vae":
        save_checkpoint(tmp / "vae", {"kind": "vae", "step": 1, "config": {}}, {"vae": {"w": torch.zeros(1)}}, {})
    elif name == "resume-garbage-json":
        (tmp / "garbage").mkdir()
        (tmp / "garbage" / "checkpoint.json").write_bytes(b"\x00\xff{{ not json")
    elif name == "resume-random-bytes":
        (tmp / "random.bin").write_bytes(os.urandom(4096))
    elif name == "resume-other-base-channels":
        save_checkpoint(tmp / "wide", _gan_meta(base_channels=8), {"generator": {"w": torch.zeros(1)}}, {})


@pytest.fixture(scope="module")
def results(tmp_path_factory, start_process):
    """Start every case and the NaN run at once; name -> (returncode, stdout, stderr, case folder, out dir)."""
    from genvision.data import load_dataset

    load_dataset("mnist5k:train", 32, 0)  # decoded here once (the decoding progress bar would be a stderr line)
    started = {}
    for name, (argv, _) in CASES.items():
        if name in IN_PROCESS:
            continue
        tmp = tmp_path_factory.mktemp(name)
        _prepare(tmp, name)
        argv = [a.replace("{tmp}", str(tmp)) for a in argv]
        out = tmp / "run"
        before = snapshot(tmp)
        started[name] = (start_process(["train_gan.py", *FLAGS, "--out-dir", str(out), *argv]),  # later flags win
                         tmp, out, before)
    nan_out = tmp_path_factory.mktemp("nan") / "run"
    nan_command = ["tests/_nan_fault.py", "3", "all", "train-gan", *FLAGS, "--out-dir", str(nan_out), "--num-steps",
                   "5", "--checkpoint-every", "2", "--log-every", "1", "--sample-every", "1"]
    started["nan"] = (start_process(nan_command), nan_out.parent, nan_out, None)
    return {name: (*wait(proc), tmp, out, before) for name, (proc, tmp, out, before) in started.items()}


def run_in_process(tmp: Path, name: str) -> tuple:
    """The case through `genvision.cli.main` here: (exit code, stdout, stderr, case folder, out dir, snapshot)."""
    _prepare(tmp, name)
    before, out = snapshot(tmp), tmp / "run"
    argv = [a.replace("{tmp}", str(tmp)) for a in CASES[name][0]]
    return (*cli("train-gan", *FLAGS, "--out-dir", out, *argv), tmp, out, before)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(results, tmp_path, name):
    code, stdout, stderr, tmp, out, before = run_in_process(tmp_path, name) if name in IN_PROCESS else results[name]
    assert_one_line_error(code, stderr, *(word.replace("{tmp}", str(tmp)) for word in CASES[name][1]),
                          command="train-gan")
    assert not out.exists(), f"{out} was created"
    assert snapshot(tmp) == before  # nothing written, nothing changed (the pre-existing file included)


def test_nan_loss_stops_with_exit_3(results):
    code, stdout, stderr, _, out, _ = results["nan"]
    assert code == 3, f"exit {code}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr
    last = stderr.rstrip("\n").split("\n")[-1]
    assert "\r" not in last and last.startswith("genvision train-gan: error: "), repr(last)
    assert "step 3" in last and str(out / "checkpoints" / "step-000002") in last, last
    # nothing of step 3 or later was written: no checkpoint, log line, grid, final image
    assert [p.name for p in list_checkpoints(out)] == ["step-000002"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    assert [record["step"] for record in metrics_records(out)] == [1, 2]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000001.png", "step-000002.png"]
    assert not (out / "final.png").exists() and "run folder" not in stdout


@pytest.mark.parametrize("value", ["1", "not-a-step"])
def test_the_old_nan_injection_variables_change_nothing(tmp_path, monkeypatch, value):
    """The test hook that 0.2.0 read inside the training loop no longer ships: its variables neither poison a step
    nor crash a run (a non-integer used to be a traceback); faults come from tests/_nan_fault.py instead."""
    monkeypatch.setenv("GENVISION_INJECT_NAN_AT_STEP", value)
    monkeypatch.setenv("GENVISION_INJECT_NAN_ON_RANK", "0")
    code, stdout, stderr = cli("train-gan", *FLAGS, "--out-dir", tmp_path / "run", "--log-every", "1")
    assert code == 0, stderr[-2000:]
    assert [record["step"] for record in metrics_records(tmp_path / "run")] == [1, 2]
