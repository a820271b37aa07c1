"""`genvision train-classifier` with bad data flags: exit code 2, one line on stderr, nothing written.

Flag errors (which fail before torch is imported) run as real subprocesses, all started at once; the cases that
open a dataset run `genvision.cli.main` in process (same parser, same error path, no torch start-up each). Spec
parsing, truncated images and batch sizes larger than the dataset are covered in-process by test_data.py.
"""

import warnings
from pathlib import Path

import pytest

from helpers import assert_one_line_error, cli, subprocess_env, wait

CASES = {
    # name: (extra argv, words the error line must contain; "{tmp}" is the case's folder)
    "unknown-dataset": (["--dataset", "imagenet"], ["imagenet", "mnist5k", "fashion-mnist", "cifar10", "svhn", "celeba",
                                                    "folder:PATH"]),
    "folder-missing": (["--dataset", "folder:{tmp}/missing"], ["{tmp}/missing", "does not exist"]),
    "folder-no-images": (["--dataset", "folder:{tmp}/empty"], ["{tmp}/empty", "no images"]),
    "folder-corrupt-image": (["--dataset", "folder:{tmp}/corrupt"], ["{tmp}/corrupt/a/x.png"]),
    "cifar10-offline": (["--dataset", "cifar10", "--data-root", "{tmp}/data"], ["cifar10", "{tmp}/data", "--download"]),
    "resolution-48": (["--resolution", "48"], ["--resolution", "must be one of 32, 64, got 48"]),
    "batch-size-0": (["--batch-size", "0"], ["--batch-size", "0"]),
    "batch-size-negative": (["--batch-size", "-1"], ["--batch-size", "-1"]),
    "channels-2": (["--channels", "2"], ["--channels"]),
}
IN_PROCESS = {"unknown-dataset", "folder-missing", "folder-no-images", "folder-corrupt-image", "cifar10-offline"}


def command(name: str, tmp: Path) -> list[str]:
    return ["train-classifier", "--epochs", "1", "--out-dir", str(tmp / "run"), *[a.format(tmp=tmp) for a in CASES[name][0]]]


def _prepare(tmp: Path, name: str) -> None:
    if name == "folder-no-images":
        (tmp / "empty" / "sub").mkdir(parents=True)
        (tmp / "empty" / "notes.txt").write_text("no images here")
    elif name == "folder-corrupt-image":
        from PIL import Image

        for label in ("a", "b"):  # two classes, as a classifier needs
            (tmp / "corrupt" / label).mkdir(parents=True)
        (tmp / "corrupt" / "a" / "x.png").write_bytes(b"definitely not a png file" * 4)
        Image.new("L", (32, 32)).save(tmp / "corrupt" / "b" / "y.png")
    elif name == "cifar10-offline":
        (tmp / "data").mkdir()


@pytest.fixture(scope="module")
def results(tmp_path_factory, start_process):
    """Start every case at once; return name -> (returncode, stdout, stderr, case folder, out dir)."""
    cache = tmp_path_factory.mktemp("cli-cache")
    env = subprocess_env(cache, PYTHONWARNINGS="ignore")
    running = {}
    for name in CASES:
        if name in IN_PROCESS:
            continue
        tmp = tmp_path_factory.mktemp(name)
        _prepare(tmp, name)
        running[name] = (start_process(["-m", "genvision", *command(name, tmp)], cwd=tmp, env=env), tmp, tmp / "run")
    done = {name: (*wait(process, timeout=120), tmp, out_dir) for name, (process, tmp, out_dir) in running.items()}
    for name in IN_PROCESS:
        tmp = tmp_path_factory.mktemp(name)
        _prepare(tmp, name)
        with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
            patch.chdir(tmp)
            patch.setenv("GENVISION_CACHE", str(cache))
            warnings.simplefilter("ignore")
            done[name] = (*cli(*command(name, tmp)), tmp, tmp / "run")
    done["cache"] = cache
    return done


@pytest.mark.parametrize("name", list(CASES))
def test_bad_data_input_is_one_line_exit_2(results, name):
    returncode, stdout, stderr, tmp, out_dir = results[name]
    assert_one_line_error(returncode, stderr, *(word.format(tmp=tmp) for word in CASES[name][1]),
                          command="train-classifier")
    assert "Traceback" not in stdout
    # nothing written: the run folder is absent, or at most an empty folder
    assert not out_dir.exists() or not any(p.is_file() for p in out_dir.rglob("*")), list(out_dir.rglob("*"))


def test_failed_runs_leave_no_temp_files_in_the_cache(results):
    leftovers = [p for p in results["cache"].rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []
