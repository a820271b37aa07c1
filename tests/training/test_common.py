"""training.common: the --process-group-timeout every training command hands to Accelerate, recorded with the run and
kept on resume (a run saved before the field existed resumes with the default). What reaches
`torch.distributed.init_process_group` under torchrun, and the wait it bounds, is tested in tests/test_distributed.py.
"""

import json
from datetime import timedelta

import pytest

from helpers import TINY_GAN, cli, saved_config
from genvision.constants import PROCESS_GROUP_TIMEOUT_MINUTES


@pytest.mark.parametrize("minutes", [0.1, 10.0, 60.0])
def test_the_kwargs_handler_always_hands_over_the_timeout(minutes):
    from genvision.training.common import process_group_kwargs

    timeout = process_group_kwargs(minutes).to_kwargs()["timeout"]  # 10 minutes is Accelerate's default: kept too
    assert abs(timeout - timedelta(minutes=minutes)) < timedelta(milliseconds=1)


def test_make_accelerator_passes_the_handler(monkeypatch):
    import accelerate

    from genvision.training.common import make_accelerator

    received = []
    real = accelerate.Accelerator
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kwargs: (received.append(kwargs), real(**kwargs))[1])
    make_accelerator("no", process_group_timeout=2.5)
    (handler,) = received[0]["kwargs_handlers"]
    assert handler.to_kwargs() == {"timeout": timedelta(minutes=2.5)}


def train_gan(monkeypatch, out, *flags) -> float:
    """A 2-step tiny train-gan run in process; returns the process_group_timeout `make_accelerator` received."""
    import genvision.training.common as common

    received = []
    real = common.make_accelerator
    monkeypatch.setattr(common, "make_accelerator",
                        lambda *args, **kwargs: (received.append(args[5] if len(args) > 5 else
                                                                 kwargs["process_group_timeout"]),
                                                 real(*args, **kwargs))[1])
    code, _, stderr = cli("train-gan", "--out-dir", out, *TINY_GAN, "--report-to", "none", "--log-every", "0",
                          "--sample-every", "0", *flags)
    assert code == 0, stderr[-3000:]
    assert len(received) == 1
    return received[0]


def test_the_timeout_is_recorded_and_kept_on_resume(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert train_gan(monkeypatch, run, "--num-steps", "1", "--process-group-timeout", "7.5") == 7.5
    assert saved_config(run, "gan")["process_group_timeout"] == 7.5
    assert train_gan(monkeypatch, run, "--num-steps", "2", "--resume", "auto") == 7.5  # the saved value
    assert saved_config(run, "gan")["process_group_timeout"] == 7.5
    assert train_gan(monkeypatch, run, "--num-steps", "3", "--resume", "auto", "--process-group-timeout", "9") == 9
    assert saved_config(run, "gan")["process_group_timeout"] == 9


def test_a_run_saved_without_the_field_resumes_with_the_default(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train_gan(monkeypatch, run, "--num-steps", "1", "--process-group-timeout", "7.5")
    for path in (run / "config.json", run / "checkpoints" / "step-000001" / "checkpoint.json"):
        record = json.loads(path.read_text())
        del record["config"]["process_group_timeout"]  # as written before the field existed
        path.write_text(json.dumps(record))
    assert train_gan(monkeypatch, run, "--num-steps", "2", "--resume", "auto") == PROCESS_GROUP_TIMEOUT_MINUTES
    assert saved_config(run, "gan")["process_group_timeout"] == PROCESS_GROUP_TIMEOUT_MINUTES


class Stop(Exception):
    """Raised by a patched make_accelerator: the test needs nothing after it."""


def test_train_classifier_hands_its_timeout_to_the_accelerator(tmp_path, monkeypatch):
    import genvision.training.classifier as classifier

    received = []

    def make_accelerator(*args, **kwargs):
        received.append(kwargs.get("process_group_timeout"))
        raise Stop

    monkeypatch.setattr(classifier, "make_accelerator", make_accelerator)
    with pytest.raises(Stop):
        cli("train-classifier", "--out-dir", tmp_path / "clf", "--process-group-timeout", "4")
    assert received == [4.0]
