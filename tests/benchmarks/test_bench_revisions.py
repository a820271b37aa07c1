"""benchmarks/bench_revisions.py: two revisions' default training runs in interleaved rounds, timed, their folders
kept with --keep, and its usage errors."""

import json

from helpers import ROOT, run_python, subprocess_env

SCRIPT = ROOT / "benchmarks" / "bench_revisions.py"


def test_interleaved_rounds_time_both_revisions_and_keep_their_runs(tmp_path):
    keep = tmp_path / "kept"
    proc = run_python([str(SCRIPT), "HEAD", "--steps", "2", "--fid-every", "0", "--rounds", "1", "--scripts",
                       "train_gan.py", "--keep", str(keep)], env=subprocess_env(tmp_path / "cache"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("1 interleaved rounds of --num-steps 2 --fid-every 0, in the order base/head")
    assert any(line.startswith("train_gan.py base (HEAD): wall s ") for line in lines)
    assert any(line.startswith("train_gan.py head (working tree): wall s ") for line in lines)
    assert any(line.startswith("train_gan.py: head / base wall time ") for line in lines)
    for name in ("base", "head"):
        summary = json.loads((keep / f"{name}-train_gan.py-0" / "summary.json").read_text())
        assert summary["step"] == 2
    again = run_python([str(SCRIPT), "HEAD", "--keep", str(keep)], timeout=60)  # a folder that holds runs
    assert again.returncode == 2 and "is not empty" in again.stderr.strip().splitlines()[-1]
    assert run_python([str(SCRIPT), "HEAD", "--rounds", "0"], timeout=60).returncode == 2


def test_rounds_alternate_which_revision_runs_first():
    import importlib.util
    import sys

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_revisions", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert [module.round_order(index) for index in range(4)] == [("base", "head"), ("head", "base")] * 2
