"""--process-group-timeout on every command that starts a process group under torchrun: the training commands (see
tests/training/test_common.py for what reaches Accelerate) and `genvision stats`, `fid` and `report`, which hand it
to `distributed.init_from_env`; a bad value is one line with exit 2."""

import json

import pytest

from helpers import assert_one_line_error, cli, run_genvision

TRAINING = ("train-gan", "train-vae", "train-classifier")
EVALUATION = {"stats": ["mnist5k:test", "--output", "x.npz"], "fid": ["mnist5k:test", "mnist5k:train"],
              "report": ["no-such-run"]}


@pytest.mark.parametrize("command, value", list(zip([*TRAINING, *EVALUATION], ["0", "-1", "0", "-1", "0", "-1"])))
def test_a_bad_timeout_is_one_line_with_exit_2(command, value, tmp_path):
    result = run_genvision(command, *EVALUATION.get(command, []), "--process-group-timeout", value, cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "--process-group-timeout must be > 0", value,
                          command=command)


@pytest.mark.parametrize("command", TRAINING)
def test_the_timeout_is_in_the_resolved_config(command, tmp_path):
    code, stdout, stderr = cli(command, "--out-dir", tmp_path / "run", "--dry-run", "--process-group-timeout", "12")
    assert code == 0, stderr
    assert json.loads(stdout)["process_group_timeout"] == 12.0


class Joined(Exception):
    """Raised by a patched init_from_env: the test needs nothing after it."""


@pytest.mark.parametrize("command", list(EVALUATION))
@pytest.mark.parametrize("flags, minutes", [([], 60.0), (["--process-group-timeout", "2.5"], 2.5)])
def test_evaluation_commands_join_the_group_with_the_timeout(command, flags, minutes, monkeypatch, tmp_path):
    from genvision import distributed

    received = []

    def init_from_env(timeout_minutes):
        received.append(timeout_minutes)
        raise Joined

    monkeypatch.setattr(distributed, "init_from_env", init_from_env)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Joined):
        cli(command, *EVALUATION[command], *flags)
    assert received == [minutes]
