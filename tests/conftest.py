"""Shared test setup: one intra-op thread (tiny models on 2 cores run faster that way), a private data cache, the
shared helpers module on sys.path, and the fixtures several test files use."""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# The suite runs on the CPU, on a GPU machine too: its exact comparisons (bit-exact resumes, batch-size independent
# grids, pinned FIDs and accuracies) are CPU results, and its torchrun tests need gloo with two processes on the CPU,
# not one GPU per rank. So every GPU is hidden from this process and, through os.environ, from every subprocess,
# before torch first looks for one (helpers.subprocess_env hides them too; pass CUDA_VISIBLE_DEVICES to it to show
# them to one subprocess). GENVISION_TEST_CUDA=1 (benchmarks/gpu_check.sh) keeps the GPUs visible instead and runs
# only the tests marked `cuda` (tests/test_cuda.py), which skip everywhere else.
CUDA_RUN = os.environ.get("GENVISION_TEST_CUDA") == "1"
if not CUDA_RUN:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:  # `import helpers` from every test file (pytest runs with --import-mode=importlib)
    sys.path.insert(0, TESTS)

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.register_assert_rewrite("helpers")  # its assertions explain their failures like the tests' own
import helpers  # noqa: E402

torch.set_num_threads(1)
if torch.cuda.is_available() and not CUDA_RUN:  # CUDA was initialised before this file ran: the variable came late
    raise RuntimeError("tests/conftest.py: a GPU is visible although CUDA_VISIBLE_DEVICES is empty (something "
                       "initialised CUDA before the test suite's conftest); the suite expects to run on the CPU")


# The longest test files (whole training runs in subprocesses, measured: 40-70 s each on 2 cores) go first.
LONG_FILES = ("test_readme.py", "test_cli_fid.py", "test_inception_weights.py", "test_distributed_fid.py",
              "test_distributed.py", "test_extractor_agreement.py", "test_gpu_check.py")


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a GPU; runs only with GENVISION_TEST_CUDA=1 "
                                       "(benchmarks/gpu_check.sh)")


def pytest_collection_modifyitems(items):
    """pytest-xdist (--dist loadfile) hands test files to its workers in collection order, so the long files of
    tests/training/ and LONG_FILES are collected first and the many short ones fill the end of the run, instead of
    one long file running alone at the end while the other worker idles. The order within a file is kept.
    With GENVISION_TEST_CUDA=1 every test not marked `cuda` is skipped: the others expect the CPU."""
    items.sort(key=lambda item: 0 if item.path.parent.name == "training" or item.path.name in LONG_FILES else 1)
    if CUDA_RUN:
        skip = pytest.mark.skip(reason="GENVISION_TEST_CUDA=1 runs only the tests marked cuda")
        for item in items:
            if item.get_closest_marker("cuda") is None:
                item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Every test and subprocess caches decoded datasets and reference stats in one temp folder, not ~/.cache."""
    cache = tmp_path_factory.mktemp("genvision-cache")
    previous = os.environ.get("GENVISION_CACHE")
    os.environ["GENVISION_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("GENVISION_CACHE", None)
    else:
        os.environ["GENVISION_CACHE"] = previous


@pytest.fixture(autouse=True, scope="session")
def _offline_inception(tmp_path_factory):
    """No test sees the developer's Inception or DINOv2 weights or reaches the network for them: an empty private
    torch hub cache, no $GENVISION_INCEPTION_WEIGHTS / $GENVISION_DINOV2_WEIGHTS, and download URLs on a closed
    loopback port (refused at once)."""
    names = ("TORCH_HOME", "GENVISION_INCEPTION_WEIGHTS", "GENVISION_INCEPTION_URL", "GENVISION_DINOV2_WEIGHTS",
             "GENVISION_DINOV2_URL")
    previous = {name: os.environ.get(name) for name in names}
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch-home"))
    os.environ.pop("GENVISION_INCEPTION_WEIGHTS", None)
    os.environ["GENVISION_INCEPTION_URL"] = helpers.CLOSED_PORT_URL
    os.environ.pop("GENVISION_DINOV2_WEIGHTS", None)
    os.environ["GENVISION_DINOV2_URL"] = helpers.CLOSED_PORT_DINOV2_URL
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def start_process():
    """start_process(argv, cwd=ROOT, env=None) starts `python ARGV...` (see helpers.start); whatever is still running
    when the module ends is killed, so a failed assertion leaves no process behind the test session."""
    started = []

    def start(argv: list[str], cwd: Path = helpers.ROOT, env: dict | None = None):
        proc = helpers.start(argv, cwd=cwd, env=env)
        started.append(proc)
        return proc

    yield start
    helpers.kill_strays(started)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private, empty $TORCH_HOME (its hub cache is created by whoever writes there first): the weights tests'
    torch hub cache."""
    torch_home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


@pytest.fixture(scope="session")
def classifier_file(tmp_path_factory) -> Path:
    """A random tiny classifier file (helpers.make_classifier, seed 0), shared read-only by every test."""
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    helpers.make_classifier(path)
    return path


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    """torch-fidelity's InceptionV3 with random weights as a .pth file (skips without torch-fidelity)."""
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    helpers.write_random_inception_weights(path)
    return path
