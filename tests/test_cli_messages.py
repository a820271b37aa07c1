"""Messages that tell the truth, as subprocesses: a missing dataset suggests `--download` only where the command has
it, a failed download says so and leaves no folder behind, and `stats` never replaces a file unasked."""

import pytest
from helpers import assert_one_line_error, run_at_once

CLOSED_PORT_URL = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # the discard port: nothing listens, so no download


@pytest.fixture(scope="module")
def results(tmp_path_factory, start_process):
    """(name -> (exit code, stdout, stderr, seconds) of every case, all started at once; the cases' folder)."""
    base = tmp_path_factory.mktemp("messages")
    (base / "empty").mkdir()
    (base / "stats.npz").write_bytes(b"an earlier statistics file")
    (base / "replaced.npz").write_bytes(b"an earlier statistics file")
    download = ("import sys, torchvision.datasets as datasets; from genvision.cli import main; "
                f"datasets.CIFAR10.url = {CLOSED_PORT_URL!r}; sys.exit(main(sys.argv[1:]))")
    jobs = {
        "fid-missing-dataset": (["-m", "genvision", "fid", "cifar10:test", "mnist5k:test", "--data-root",
                                 str(base / "empty")], base),
        "download-offline": (["-c", download, "train-gan", "--dataset", "cifar10", "--download", "--data-root",
                              str(base / "new" / "data"), "--out-dir", str(base / "run"), "--fid-every", "0"], base),
        "stats-exists": (["-m", "genvision", "stats", "mnist5k:test", "--output", str(base / "stats.npz")], base),
        "stats-overwrite": (["-m", "genvision", "stats", "mnist5k:test", "--output", str(base / "replaced.npz"),
                             "--overwrite"], base),
    }
    return run_at_once(jobs, start_process), base


def test_a_missing_dataset_suggests_download_only_where_the_command_has_it(results):
    done, base = results
    code, _, stderr, _ = done["fid-missing-dataset"]
    line = assert_one_line_error(code, stderr, command="fid")
    assert line == (f"genvision fid: error: dataset cifar10 not found in {(base / 'empty').resolve()}; point "
                    "--data-root at the folder that holds it")


def test_a_failed_download_says_so_and_leaves_no_folder(results):
    done, base = results
    code, _, stderr, _ = done["download-offline"]
    line = assert_one_line_error(code, stderr, command="train-gan")
    new_data = base / "new" / "data"
    assert line.startswith(f"genvision train-gan: error: dataset cifar10: download into {new_data} failed ("), line
    assert line.endswith("); check the network connection, or put the dataset's files there yourself and drop "
                         "--download"), line
    assert "corrupt" not in line
    assert not (base / "new").exists() and not (base / "run").exists()  # nor the parent the download made


def test_stats_refuses_an_existing_output_without_overwrite(results):
    done, base = results
    code, stdout, stderr, _ = done["stats-exists"]
    line = assert_one_line_error(code, stderr, command="stats")
    assert line == f"genvision stats: error: --output {base / 'stats.npz'} exists; pass --overwrite to replace it"
    assert stdout == "" and (base / "stats.npz").read_bytes() == b"an earlier statistics file"
    code, stdout, stderr, _ = done["stats-overwrite"]
    assert code == 0 and stdout.startswith(f"wrote {base / 'replaced.npz'}: classifier statistics of 500 images"), \
        stderr
    assert (base / "replaced.npz").read_bytes()[:2] == b"PK"  # an .npz (zip) archive now
