"""benchmarks/bench_train.py's warm-up: a genvision variant that fails (the first GPU check: torch 2.11's inductor
refused one compiled variant's backward) is reported and dropped, and the others are still measured; the
baseline's failure still ends the run; the matmul peak is timed after a warm-up product. The full benchmark runs in
the GPU check (tests/test_gpu_check.py)."""

import pytest
import torch

from helpers import load_benchmark


def load_bench_train():
    return load_benchmark("bench_train")


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


def test_the_matmul_peak_is_timed_after_a_warm_up_product(monkeypatch):
    """A dtype's first product pays for the library's set-up: timed as the size probe, it stopped the doubling at
    256 (the first GPU check's bf16 peak: 0.78 TFLOP/s instead of ~780). Here the first product of the run takes
    0.5 s, the others 1 ms: the peak is still measured at the largest size."""
    bench_train = load_bench_train()
    calls = []

    def pretend_seconds(run, steps, device):
        run(steps)
        calls.append(steps)
        return 0.5 if len(calls) == 1 else 1e-3

    monkeypatch.setattr(bench_train, "seconds", pretend_seconds)
    flops, size = bench_train.peak_flops(torch.device("cpu"), torch.float32, 1024)
    assert size == 1024
    torch.testing.assert_close(flops, 2 * 1024 ** 3 / 1e-3)
