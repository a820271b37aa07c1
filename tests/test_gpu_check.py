"""benchmarks/gpu_check.sh, the prepared GPU check: its --dry-run on the CPU checks that every step's command parses
and writes the report; a step that fails is recorded and makes the check fail, without stopping the others."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT, load_benchmark, subprocess_env

STEPS = ["cuda_tests", "train_classifier", "train_gan", "train_vae", "fid50k", "bench_train_classic", "bench_fid",
         "bench_train_cifar"]


def load_gpu_check():
    return load_benchmark("gpu_check")


@pytest.mark.slow
def test_dry_run_parses_every_step_and_writes_the_report(tmp_path):
    pytest.importorskip("torch_fidelity")  # the fid50k step needs the inception extra
    report_path = tmp_path / "out" / "gpu_check.json"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path,
                          env=subprocess_env(OUT=str(tmp_path / "out"), PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())  # $OUT/gpu_check.json
    assert report["dry_run"] is True and report["failed_steps"] == []
    assert list(report["steps"]) == STEPS
    for name, step in report["steps"].items():
        assert step["status"] == "ok" and step["returncode"] == 0, (name, step["output_tail"])
        assert step["command"] and step["checked_with"] and step["budget_s"] > 0
    assert sum(step["budget_s"] for step in report["steps"].values()) <= report["budget_s"] <= 480
    assert "6 tests collected" in report["steps"]["cuda_tests"]["output_tail"]
    assert "--dry-run" in report["steps"]["train_gan"]["checked_with"]
    assert {"--mixed-precision", "bf16", "--compile"} <= set(report["steps"]["train_gan"]["command"])
    assert report["machine"]["torch"] and report["machine"]["cuda_available"] is False
    assert report["commit"] and report["total_s"] > 0


def test_a_failing_step_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()
    fail = [sys.executable, "-c", "import sys; print('bad flag'); sys.exit(3)"]
    succeed = [sys.executable, "-c", "print('fine')"]
    monkeypatch.setattr(gpu_check, "steps", lambda workdir: [gpu_check.Step("first", fail, 10, fail),
                                                             gpu_check.Step("second", succeed, 10, succeed)])
    report_path = tmp_path / "report.json"
    assert gpu_check.main(["--dry-run", "--json", str(report_path)]) == 1
    report = json.loads(report_path.read_text())
    assert report["failed_steps"] == ["first"]
    assert (report["steps"]["first"]["status"], report["steps"]["first"]["returncode"]) == ("failed", 3)
    assert "bad flag" in report["steps"]["first"]["output_tail"] and report["steps"]["second"]["status"] == "ok"


def test_steps_runs_only_the_named_steps_and_refuses_an_unknown_name(tmp_path, monkeypatch, capsys):
    """--steps reruns part of the check (a lease too short for all of it): only the named steps run, in the
    check's order; an unknown name is one line on stderr and exit 2, before anything runs."""
    gpu_check = load_gpu_check()
    report_path = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--dry-run", "--json", str(report_path), "--steps", "cuda_tests,bench_trains"])
    assert exit_info.value.code == 2 and not report_path.exists()
    assert "--steps: unknown bench_trains; expected names from cuda_tests, " in capsys.readouterr().err
    succeed = [sys.executable, "-c", "print('fine')"]
    monkeypatch.setattr(gpu_check, "steps", lambda workdir: [gpu_check.Step(name, succeed, 10, succeed)
                                                             for name in ("first", "second", "third")])
    assert gpu_check.main(["--dry-run", "--json", str(report_path), "--steps", "third, first"]) == 0
    report = json.loads(report_path.read_text())
    assert list(report["steps"]) == ["first", "third"] and report["steps_selected"] == ["third", "first"]


def test_a_step_past_its_timeout_is_killed_and_recorded(tmp_path):
    gpu_check = load_gpu_check()
    result = gpu_check.run_command([sys.executable, "-c", "import time; print('started', flush=True); "
                                    "time.sleep(60)"], subprocess_env(), timeout=2)
    assert result["status"] == "timeout" and result["seconds"] < 30 and "started" in result["output_tail"]


def test_the_real_check_needs_a_gpu(tmp_path):
    gpu_check = load_gpu_check()
    report_path = tmp_path / "report.json"
    assert gpu_check.main(["--json", str(report_path), "--workdir", str(tmp_path / "work")]) == 2
    assert "no CUDA device" in json.loads(report_path.read_text())["error"]


def test_the_real_loop_times_each_step_keeps_its_figures_and_judges_the_targets(tmp_path, monkeypatch):
    """The GPU run's loop, with a pretend GPU and stand-in steps: each step's figures file is merged, the targets
    are judged from them, a step past its share of the budget (its own, plus what earlier steps left, less what
    later steps need) is killed, the steps after it still run, and the report says which failed."""
    gpu_check = load_gpu_check()
    classic = {"settings": {"classic": {"compile_fell_back": [], "pipelines": {
        "baseline": {"vs_baseline": 1.0}, "eager": {"vs_baseline": 2.0}, "best": {"vs_baseline": 3.5}}}}}
    fid = {"total_s": 12.5}

    def writer(path, figures):
        return [sys.executable, "-c", f"import json, pathlib; pathlib.Path({str(path)!r}).write_text("
                                      f"json.dumps({figures!r}))"]

    def stand_ins(workdir):
        return [gpu_check.Step("bench_train_classic", writer(workdir / "classic.json", classic), 2, [],
                               figures_file=workdir / "classic.json"),
                gpu_check.Step("slow", [sys.executable, "-c", "import time; time.sleep(60)"], 3, []),
                gpu_check.Step("fid50k", writer(workdir / "fid.json", fid), 20, [], figures_file=workdir / "fid.json")]

    monkeypatch.setattr(gpu_check, "steps", stand_ins)
    monkeypatch.setattr(gpu_check, "machine", lambda: {"cuda_available": True, "gpu": "pretend"})
    report_path = tmp_path / "report.json"
    code = gpu_check.main(["--json", str(report_path), "--workdir", str(tmp_path / "work"), "--budget-seconds", "27",
                           "--commit", "abc123"])
    report = json.loads(report_path.read_text())
    assert code == 1 and report["failed_steps"] == ["slow"] and report["commit"] == "abc123"
    assert report["steps"]["slow"]["status"] == "timeout" and report["steps"]["slow"]["timeout_s"] <= 8  # 27 - 20 kept
    assert report["steps"]["fid50k"]["figures"] == fid
    speed = report["targets"]["classic_step_vs_usual_loop"]
    assert (speed["fastest"], speed["met"]) == ("best", True)
    assert report["targets"]["fid50k_inception_seconds"] == {"target": "< 30.0 s", "seconds": 12.5, "met": True}
