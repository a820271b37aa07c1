"""Training under 2 gloo processes with FID on: every rank scores its share, the logged FID is `genvision fid` of
the checkpoint, logged losses are rank means, and a NaN on one rank stops every rank with exit 3 naming the step."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, TINY_GAN, cli, free_port, metrics_records, run_genvision, run_python, subprocess_env

PROBE = Path(__file__).resolve().parent / "_rank_stats_probe.py"
# 700 FID samples in TrainingFID's batches of 500: rank 0 scores 500 of them, rank 1 the other 200.
FLAGS = [*TINY_GAN, "--num-steps", "2", "--fid-every", "2", "--num-fid-samples", "700", "--log-every", "1",
         "--sample-every", "0", "--checkpoint-every", "2", "--report-to", "none"]


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist-eval")
    (base / "probe").mkdir()
    proc = run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
                       "--master-port", str(free_port()), str(PROBE), str(base / "probe"), "--out-dir",
                       str(base / "run"), *FLAGS], env=subprocess_env(CUDA_VISIBLE_DEVICES=""), timeout=300)
    return proc, base / "run", base / "probe"


def test_logged_fid_is_genvision_fid_of_the_checkpoint(launch):
    proc, run, _ = launch
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = [r["fid"] for r in metrics_records(run) if "fid" in r]
    assert len(logged) == 1 and proc.stdout.count("FID ") >= 1
    checkpoint = run / "checkpoints" / "step-000002"
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    scored = run_genvision("fid", checkpoint, "mnist5k:train", "--num-samples", "700", "--seed", "0", "--json")
    assert scored.returncode == 0, scored.stderr[-3000:]
    one_process = json.loads(scored.stdout)["fid"]
    assert meta["fid"] == pytest.approx(one_process, rel=1e-6)
    assert logged[0] == pytest.approx(one_process, abs=1e-5)  # metrics.jsonl rounds to 5 decimals
    record = next(r for r in metrics_records(run) if "fid" in r)  # each feature block's distance beside the FID
    blocks = json.loads(scored.stdout)["fid_blocks"]
    assert (record["fid_semantic"], record["fid_low_level"]) == pytest.approx(
        (blocks["semantic"], blocks["low-level"]), abs=1e-5)
    assert re.search(r"FID [0-9.]+ \(semantic [0-9.]+, low-level [0-9.]+\)", proc.stdout + proc.stderr)
    assert (run / "report.html").is_file() and proc.stdout.count("report ") == 1


def metrics_table(page: str) -> str:
    """The final-metrics table of a report page (the caption before it holds the seconds it took)."""
    return re.search(r"computed in [0-9.]+ s</p>(<table>.*?</table>)", page, re.S).group(1)


def test_end_of_run_report_of_two_ranks_is_the_one_process_report(launch, tmp_path):
    """The 2-rank report scored its 700 samples sharded (the bootstrap replicates split between the ranks too); the
    one-process `genvision report` of the same run gives the same FID, interval, KID, precision/recall and scores."""
    proc, run, _ = launch
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = metrics_table((run / "report.html").read_text())
    copy = shutil.copytree(run, tmp_path / "run")
    code, _, stderr = cli("report", copy, "--num-samples", "700")
    assert code == 0, stderr[-3000:]
    assert "bootstrap 95% interval" in two and "KID" in two and "classifier score" in two
    assert metrics_table((copy / "report.html").read_text()) == two


def test_logged_losses_are_rank_means(launch):
    proc, run, probe = launch
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [[json.loads(line) for line in (probe / f"stats-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    logged = [r for r in metrics_records(run) if "d_loss" in r]
    assert [r["step"] for r in logged] == [1, 2]
    for record, first, second in zip(logged, *ranks):
        assert first["d_loss"] != second["d_loss"]  # the ranks saw different batches
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert record[key] == pytest.approx((first[key] + second[key]) / 2, abs=1e-5), key


def test_nan_on_one_rank_stops_every_rank_with_exit_3(tmp_path):
    """Two processes started by hand (torchrun's environment), so each one's exit code is seen: a NaN at step 3 on
    rank 1 only is found at the step-4 log on both ranks; nothing of steps 3 and 4 is written."""
    out = tmp_path / "run"
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = subprocess_env(tmp_path / "cache", CUDA_VISIBLE_DEVICES="", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                             WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
        env.pop("GENVISION_CACHE", None)
        procs.append(subprocess.Popen([sys.executable, "tests/_nan_fault.py", "3", "1", "train-gan", "--out-dir",
                                       str(out), *TINY_GAN, "--num-steps", "6", "--log-every", "2",
                                       "--checkpoint-every", "2", "--sample-every", "0", "--report-to", "none"],
                                      cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, results):
        assert proc.returncode == 3, stderr[-3000:]
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert "non-finite loss at step 3 on rank 1 of 2" in lines[-1], lines[-1]
        assert str(out / "checkpoints" / "step-000002") in lines[-1] and "Traceback" not in stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    assert [r["step"] for r in metrics_records(out)] == [2]
