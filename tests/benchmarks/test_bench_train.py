"""benchmarks/bench_train.py's warm-up: a genvision variant that fails (the first GPU check: torch 2.11's inductor
refused one compiled variant's backward) is reported and dropped, and the others are still measured; the
baseline's failure still ends the run. The full benchmark runs in the GPU check (tests/test_gpu_check.py)."""

import importlib.util
import sys

import pytest
import torch

from helpers import ROOT


def load_bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_train", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def broken(steps: int) -> None:
    raise AssertionError("expected size 512==512, stride 16==1 at dim=1\nError in op: convolution_backward")


def test_a_failing_variant_is_dropped_and_reported_and_the_others_warm_up(capsys):
    bench_train = load_bench_train()
    ran = []
    pipelines = {"baseline": bench_train.Pipeline(lambda steps: ran.append(("baseline", steps))),
                 "compile": bench_train.Pipeline(broken),
                 "eager": bench_train.Pipeline(lambda steps: ran.append(("eager", steps)))}
    warmup, failed = bench_train.warm_up(pipelines, 3, torch.device("cpu"), bench_train.CompileWatch(), "classic")
    assert list(pipelines) == ["baseline", "eager"] and set(warmup) == {"baseline", "eager"}
    assert ran == [("baseline", 3), ("eager", 3)] and all(seconds >= 0 for seconds in warmup.values())
    assert failed == {"compile": "AssertionError: expected size 512==512, stride 16==1 at dim=1"}
    assert capsys.readouterr().err == ("bench_train: classic: genvision compile failed at warm-up (AssertionError: "
                                       "expected size 512==512, stride 16==1 at dim=1); measuring the others\n")


def test_the_baselines_failure_ends_the_run():
    bench_train = load_bench_train()
    with pytest.raises(AssertionError, match="expected size"):
        bench_train.warm_up({"baseline": bench_train.Pipeline(broken)}, 1, torch.device("cpu"),
                            bench_train.CompileWatch(), "cifar")
