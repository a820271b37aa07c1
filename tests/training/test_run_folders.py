"""A run folder belongs to one run, and `--resume` continues that run with its saved settings.

Every case runs `train_gan.py` / `train_vae.py` with tiny models and asserts the exit code, the one line it prints,
and that the files it must not touch are byte-identical afterwards (or, for `--overwrite`, that no file of the old
run remains). The cases work on copies of one finished 3-step run and do not depend on each other. Those that train
are subprocesses, all started at once (`helpers.run_at_once`); those refused or stopped before any step, and the dry
runs, go through `genvision.cli.main` in this process meanwhile (the same parser, checks and error path, without a
torch start-up each). Symbolic links in a run folder point into `outside/`, where nothing may be written; the
"busy" folder is locked by this process (as a running run locks it) while the cases run.
"""

import fcntl
import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import (ROOT, assert_one_line_error, assert_same_checkpoints, cli, finish, free_port, run_at_once,
                     snapshot, tiny_flags)

TINY = [*tiny_flags(latent_dim=8), "--checkpoint-every", "3", "--sample-every", "3", "--log-every", "1", "--seed", "3"]
SAVED = ["--loss", "hinge", "--d-lr", "0.0003"]  # GAN settings a resume must take from the saved config
GAN, VAE = str(ROOT / "train_gan.py"), str(ROOT / "train_vae.py")
TORCHRUN = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
            str(free_port())]
TORCHRUN_BUSY = [*TORCHRUN[:-1], str(free_port())]  # a port of its own: it runs beside "resumed-by-two"
EARLIER_WALL_TIME = 1000.0  # s: what the earlier sessions of the "wall-time" case took, by its checkpoint.json
CLASSIFIER = ["-m", "genvision", "train-classifier", "--epochs", "1", "--base-channels", "8", "--num-features", "16"]

DRY_RUNS = {  # name: (flags, the error that --dry-run gives without loading any data)
    "unknown-dataset": (["--dataset", "imagenet"],
                        "--dataset imagenet: unknown dataset 'imagenet'; expected one of mnist5k"),
    "unknown-split": (["--dataset", "mnist5k:valid"], "--dataset mnist5k:valid: unknown split 'valid' of mnist5k"),
    "unknown-reference": (["--fid-reference", "cifar100:test"],
                          "--fid-reference cifar100:test: unknown dataset 'cifar100'"),
    "missing-folder": (["--dataset", "folder:no/such/folder"],
                       "--dataset folder:no/such/folder: folder no/such/folder does not exist"),
    "missing-classifier": (["--classifier", "no-such.safetensors", "--fid-every", "10"],
                           "--classifier no-such.safetensors: no such file"),
    "resolution-48": (["--resolution", "48"], "--resolution must be one of 32, 64, 128, got 48"),
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory, start_process):
    """Every case at once. Returns (results: name -> (exit code, stdout, stderr, seconds), folders: name -> its
    folder, before: folder name -> snapshot taken before any case started, straight: the 6-step run)."""
    base = tmp_path_factory.mktemp("run-folders")
    short, straight = base / "short", base / "straight"
    finish(start_process(["train_gan.py", "--out-dir", str(short), *TINY, *SAVED, "--num-steps", "3"]), "3 steps")
    folders = {name: shutil.copytree(short, base / name) for name in
               ("held", "overwritten", "finished", "resumed", "resumed-by-two", "overwritten-links", "linked-metrics",
                "linked-checkpoints", "busy")}
    (folders["overwritten"] / "notes.txt").write_text("the user's own file\n")
    meta_path = folders["resumed"] / "checkpoints" / "step-000003" / "checkpoint.json"  # earlier sessions took 1000 s
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "wall_time_s": EARLIER_WALL_TIME}))
    folders["outside"] = plant_links(base, folders)
    busy_lock = hold_lock(folders["busy"])  # a run in progress in "busy": its lock held until every case ended
    before = {name: snapshot(folder) for name, folder in folders.items()}
    held, finished_run = str(folders["held"]), str(folders["finished"])
    busy = str(folders["busy"])
    jobs = {  # these train: subprocesses
        "overwrite": ([VAE, "--out-dir", str(folders["overwritten"]), *TINY, "--num-steps", "2", "--checkpoint-every",
                       "2", "--overwrite"], base),
        "resume": ([GAN, "--out-dir", str(folders["resumed"]), "--resume", "auto", "--num-steps", "6"], base),
        "straight": ([GAN, "--out-dir", str(straight), *TINY, *SAVED, "--num-steps", "6"], base),
        "resumed-by-two": ([*TORCHRUN, GAN, "--out-dir", str(folders["resumed-by-two"]), "--resume", "auto",
                            "--num-steps", "4"], base),
        "overwrite-links": ([GAN, "--out-dir", str(folders["overwritten-links"]), *TINY, "--num-steps", "2",
                             "--overwrite"], base),
        # --overwrite passes the plan (the files are an earlier run's), so only the lock keeps the running run's files
        "in-use": ([GAN, "--out-dir", busy, *TINY, "--num-steps", "2", "--overwrite"], base),
        "in-use-classifier": ([*CLASSIFIER, "--out-dir", busy, "--overwrite"], base),
        "in-use-by-two": ([*TORCHRUN_BUSY, GAN, "--out-dir", busy, *TINY, "--num-steps", "2", "--overwrite"], base),
    }
    in_process = {  # refused, or done before any step: genvision.cli.main here, while the subprocesses run
        "new-run": (["train-gan", "--out-dir", held, *TINY, "--num-steps", "2"], base),
        "new-run-dry": (["train-vae", "--out-dir", held, "--num-steps", "2", "--dry-run"], base),
        "resume-and-overwrite": (["train-gan", "--out-dir", held, "--resume", "auto", "--overwrite"], base),
        "already-done": (["train-gan", "--out-dir", finished_run, "--resume", "auto"], base),
        "steps-below": (["train-gan", "--out-dir", finished_run, "--resume", "auto", "--num-steps", "2"], base),
        "other-width": (["train-gan", "--out-dir", finished_run, "--resume", "auto", "--num-steps", "6",
                         "--base-channels", "8"], base),
        "resume-dry": (["train-gan", "--out-dir", finished_run, "--resume", "auto", "--num-steps", "6", "--dry-run"],
                       base),
        "dangling": (["train-gan", "--out-dir", str(folders["dangling"]), *TINY, "--num-steps", "2"], base),
        "linked-metrics": (["train-gan", "--out-dir", str(folders["linked-metrics"]), "--resume", "auto",
                            "--num-steps", "6"], base),
        "linked-checkpoints": (["train-gan", "--out-dir", str(folders["linked-checkpoints"]), "--resume", "auto",
                                "--num-steps", "6"], base),
    }
    for name, (flags, _) in DRY_RUNS.items():
        folders[name] = tmp_path_factory.mktemp(name)
        in_process[name] = (["train-gan", "--out-dir", "run", *flags, "--dry-run"], folders[name])
    try:
        with ThreadPoolExecutor(1) as pool:
            training = pool.submit(run_at_once, jobs, start_process)
            results = {name: run_in_process(argv, cwd) for name, (argv, cwd) in in_process.items()}
            results.update(training.result())
    finally:
        os.close(busy_lock)
    for name, (_, _, stderr, _) in results.items():
        if name != "in-use-by-two":  # torchrun's own report of its failed workers is a traceback
            assert "Traceback" not in stderr, (name, stderr[-3000:])
    return results, folders, before, straight


def plant_links(base, folders: dict):
    """Symbolic links into `base/outside` (returned): "dangling" (a new folder) holds only metrics.jsonl -> a file
    that does not exist; "overwritten-links" the same dangling metrics.jsonl, its checkpoints/ moved outside and
    linked, and one sample a link; "linked-metrics" and "linked-checkpoints" their metrics.jsonl / checkpoints/
    moved outside and linked (live links)."""
    outside = base / "outside"
    outside.mkdir()
    folders["dangling"] = base / "dangling"
    folders["dangling"].mkdir()
    (folders["dangling"] / "metrics.jsonl").symlink_to(outside / "dangling-metrics.jsonl")
    run = folders["overwritten-links"]
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(outside / "overwrite-metrics.jsonl")
    shutil.move(run / "checkpoints", outside / "overwrite-checkpoints")
    (run / "checkpoints").symlink_to(outside / "overwrite-checkpoints")
    shutil.move(run / "samples" / "step-000003.png", outside / "grid.png")
    (run / "samples" / "step-000003.png").symlink_to(outside / "grid.png")
    shutil.move(folders["linked-metrics"] / "metrics.jsonl", outside / "resume-metrics.jsonl")
    (folders["linked-metrics"] / "metrics.jsonl").symlink_to(outside / "resume-metrics.jsonl")
    shutil.move(folders["linked-checkpoints"] / "checkpoints", outside / "resume-checkpoints")
    (folders["linked-checkpoints"] / "checkpoints").symlink_to(outside / "resume-checkpoints")
    return outside


def hold_lock(run) -> int:
    """Lock `run` as a running genvision run does (flock on its .genvision.lock, which names the pid); returns the
    open descriptor: closing it releases the lock."""
    fd = os.open(run / ".genvision.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def links(folder) -> dict:
    """Relative path -> target of every symbolic link below `folder` (not followed)."""
    return {str(path.relative_to(folder)): os.readlink(path) for path in sorted(folder.rglob("*"))
            if path.is_symlink()}


def run_in_process(argv: list[str], cwd) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds) of `genvision ARGV...` in process, in the working directory `cwd`."""
    began, previous = time.monotonic(), os.getcwd()
    os.chdir(cwd)
    try:
        return (*cli(*argv), time.monotonic() - began)
    finally:
        os.chdir(previous)


def refusal(results: dict, name: str, command: str = "train-gan") -> str:
    """The one stderr line of a refused case (exit code 2)."""
    code, _, stderr, _ = results[name]
    return assert_one_line_error(code, stderr, command=command)


def succeeded(results: dict, name: str) -> str:
    code, stdout, stderr, _ = results[name]
    assert code == 0, (name, stderr[-3000:])
    return stdout


def test_a_new_run_into_a_run_folder_is_refused_and_changes_nothing(cases):
    results, folders, before, _ = cases
    held = folders["held"]
    line = refusal(results, "new-run")
    assert line.startswith(f"genvision train-gan: error: --out-dir {held} holds an earlier run (config.json, "), line
    assert line.endswith("continue it with --resume auto, start afresh with --overwrite (removes those files), or "
                         "choose another --out-dir"), line
    assert f"--out-dir {held} holds an earlier run" in refusal(results, "new-run-dry", "train-vae")  # a dry run too
    assert refusal(results, "resume-and-overwrite").endswith("give at most one of --resume auto (continue the run) "
                                                             "and --overwrite (start afresh)")
    assert snapshot(held) == before["held"]


def test_overwrite_removes_every_file_of_the_earlier_run(cases):
    results, folders, _, _ = cases
    run = folders["overwritten"]
    assert "--overwrite: removed the earlier run's config.json, metrics.jsonl, summary.json" in \
        succeeded(results, "overwrite")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["reconstructions-step-000002.png",
                                                                  "step-000002.png"]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((run / "config.json").read_text())["kind"] == "vae"
    assert json.loads((run / "summary.json").read_text())["step"] == 2
    assert (run / "notes.txt").read_text() == "the user's own file\n"  # not a run file: kept


def test_resume_auto_of_a_finished_run_changes_nothing(cases):
    results, folders, before, _ = cases
    run = folders["finished"]
    code, stdout, stderr, _ = results["already-done"]
    assert code == 0 and stderr == "", stderr[-3000:]
    assert stdout.strip() == (f"run folder {run} is already at step 3 of --num-steps 3; nothing to do (give a larger "
                              "--num-steps to train on)")
    assert refusal(results, "steps-below") == (f"genvision train-gan: error: --num-steps 2 is below step 3 of "
                                               f"{run}/checkpoints/step-000003; give --num-steps 3 or more")
    line = refusal(results, "other-width")
    assert "base_channels" in line and "8" in line and "4" in line, line
    assert snapshot(run) == before["finished"]


def test_resume_with_only_num_steps_continues_the_saved_run_bit_for_bit(cases):
    results, folders, _, straight = cases
    run = folders["resumed"]
    succeeded(results, "straight")
    saved = json.loads((straight / "config.json").read_text())["config"]
    planned = json.loads(succeeded(results, "resume-dry"))  # the saved batch size, widths, intervals and loss
    assert {**planned, "resume": "", "out_dir": ""} == {**saved, "resume": "", "out_dir": ""}
    assert "resuming from" in succeeded(results, "resume") and "step-000003 at step 3" in results["resume"][1]
    assert_same_checkpoints(run / "checkpoints" / "step-000006", straight / "checkpoints" / "step-000006")
    resumed = json.loads((run / "config.json").read_text())["config"]
    assert {**resumed, "resume": "", "out_dir": ""} == {**saved, "resume": "", "out_dir": ""}
    short = straight.parent / "short"
    first_session = json.loads((short / "summary.json").read_text())["wall_time_s"]
    three = json.loads((short / "checkpoints" / "step-000003" / "checkpoint.json").read_text())["wall_time_s"]
    assert json.loads((run / "summary.json").read_text())["step"] == 6 and 0 < three <= first_session


def test_the_wall_time_of_a_resumed_run_counts_every_session(cases):
    """Earlier sessions' time travels in checkpoint.json: the "resume" case's says they took 1000 s up to step 3."""
    results, folders, _, _ = cases
    run = folders["resumed"]
    seconds = results["resume"][3]  # the whole resuming process
    assert EARLIER_WALL_TIME < json.loads((run / "summary.json").read_text())["wall_time_s"] < \
        EARLIER_WALL_TIME + seconds
    shown = re.search(r"<td>wall time</td><td class=num>([0-9.]+)</td>", (run / "report.html").read_text())
    assert shown and EARLIER_WALL_TIME < float(shown.group(1)) < EARLIER_WALL_TIME + seconds


def test_resume_in_another_process_count_says_so(cases):
    """A 1-process checkpoint resumed by 2 gloo processes (torchrun) names both counts in one line."""
    results, folders, _, _ = cases
    run = folders["resumed-by-two"]
    notes = [line for line in succeeded(results, "resumed-by-two").splitlines() if line.startswith("note:")]
    assert notes == [f"note: {run}/checkpoints/step-000003 was written by 1 process and is resumed by 2 processes: "
                     "weights, optimizers and the data position continue, but the data is resharded and each rank's "
                     "noise reseeded, so the continuation is exact per rank only, not the run 1 process would have "
                     "made"]
    assert json.loads((run / "checkpoints" / "step-000004" / "checkpoint.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("name", list(DRY_RUNS))
def test_dry_run_checks_everything_that_needs_no_data(cases, name):
    results, folders, _, _ = cases
    line = refusal(results, name)
    assert line.startswith(f"genvision train-gan: error: {DRY_RUNS[name][1]}"), line
    assert list(folders[name].iterdir()) == []  # no folder created by a command that fails


def test_a_dangling_link_counts_as_a_run_file_and_nothing_is_written_through_it(cases):
    results, folders, _, _ = cases
    run, outside = folders["dangling"], folders["outside"]
    line = refusal(results, "dangling")
    assert line.startswith(f"genvision train-gan: error: --out-dir {run} holds an earlier run (metrics.jsonl); "), line
    assert [path.name for path in run.iterdir()] == ["metrics.jsonl"] and (run / "metrics.jsonl").is_symlink()
    assert not (outside / "dangling-metrics.jsonl").exists()


def test_overwrite_removes_links_never_their_targets(cases):
    """A dangling metrics.jsonl, a linked checkpoints/ and a linked sample: --overwrite removes the links themselves,
    the run writes its own plain files, and nothing outside the run folder is created, changed or deleted."""
    results, folders, before, _ = cases
    run, outside = folders["overwritten-links"], folders["outside"]
    assert "--overwrite: removed the earlier run's config.json, metrics.jsonl, " in \
        succeeded(results, "overwrite-links")
    assert links(run) == {}
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002"]
    assert not (outside / "overwrite-metrics.jsonl").exists()
    assert snapshot(outside) == before["outside"]


@pytest.mark.parametrize("name, link", [("linked-metrics", "metrics.jsonl"), ("linked-checkpoints", "checkpoints")])
def test_resume_into_a_folder_with_a_link_is_refused_and_changes_nothing(cases, name, link):
    results, folders, before, _ = cases
    run = folders[name]
    line = refusal(results, name)
    assert line.startswith(f"genvision train-gan: error: --resume auto: {run / link} in --out-dir {run} is a "
                           "symbolic link"), line
    assert snapshot(run) == before[name] and snapshot(folders["outside"]) == before["outside"]


def test_a_second_run_into_a_folder_in_use_is_refused_and_changes_nothing(cases):
    """"busy" is locked by this process (a run in progress there): a second run, --overwrite and all, is refused in
    one line naming the holder's pid, as a classifier run is, and under torchrun every rank stops (none waits for
    rank 0); the running run's files are byte for byte as they were."""
    results, folders, before, _ = cases
    run = folders["busy"]
    expected = (f"--out-dir {run} is in use by another genvision run (pid {os.getpid()}); wait for it to end, or "
                "choose another --out-dir")
    assert refusal(results, "in-use") == f"genvision train-gan: error: {expected}"
    assert refusal(results, "in-use-classifier", "train-classifier") == f"genvision train-classifier: error: {expected}"
    code, _, stderr, _ = results["in-use-by-two"]
    assert code != 0 and stderr.count(f"genvision train-gan: error: {expected}") == 2, stderr[-3000:]
    assert f'File "{ROOT / "genvision"}' not in stderr, stderr[-3000:]  # the ranks stopped on the error, no traceback
    assert snapshot(run) == before["busy"]


class OneProcess:
    """What `claim_run_dir` reads of an Accelerator in a single process."""

    is_main_process, num_processes = True, 1


def test_the_run_folder_lock_is_one_holder_at_a_time_and_leaves_no_file(tmp_path):
    from genvision.errors import UsageError
    from genvision.training.common import LOCK_FILE, claim_run_dir, lock_run_dir

    run = tmp_path / "new" / "run"
    lock = lock_run_dir(run)  # creates the folder
    assert [p.name for p in run.iterdir()] == [LOCK_FILE] and (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(UsageError, match=rf"^--out-dir {run} is in use by another genvision run \(pid {os.getpid()}\)"):
        lock_run_dir(run)  # another open file description: refused as another process would be
    lock.release()
    assert list(run.iterdir()) == []
    (run / LOCK_FILE).write_text("12345\n")  # left by a run that was killed: not locked, so taken
    lock_run_dir(run).release()
    assert list(run.iterdir()) == []

    def refuse():
        raise UsageError("changed meanwhile")

    with pytest.raises(UsageError, match="changed meanwhile"):
        claim_run_dir(OneProcess(), run, refuse)
    assert list(run.iterdir()) == []  # the refused claim released its lock and removed the file
    lock, checked = claim_run_dir(OneProcess(), run, lambda: "checked")
    assert checked == "checked"
    lock.release()

    (run / LOCK_FILE).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match=rf"^--out-dir {run}: {run / LOCK_FILE} is a symbolic link"):
        lock_run_dir(run)
    assert not (tmp_path / "elsewhere").exists()
