"""What several test files share: the repository paths, tiny run flags, subprocess runners, the in-process CLI, exact
checkpoint comparisons, the one-line error check, and tiny files (classifier, PNG folders, random InceptionV3 weights).

Imported as `helpers` (tests/conftest.py puts this folder on sys.path; pytest runs with --import-mode=importlib).
Pytest fixtures built on these live in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """benchmarks/NAME.py as a module (its main() does not run), registered in sys.modules under NAME, where its
    dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module
# Port 9 (discard) on loopback: nothing listens in a test environment, so a download is refused at once.
CLOSED_PORT_URL = "http://127.0.0.1:9/weights-inception-2015-12-05-6726825d.pth"
CLOSED_PORT_DINOV2_URL = "http://127.0.0.1:9/dinov2_{model}_pretrain.pth"
SHIPPED_CLASSIFIER = ROOT / "genvision" / "weights" / "classifier-mnist5k.safetensors"


def tiny_flags(latent_dim: int, fid_every: int = 0) -> list[str]:
    """Flags of a tiny training run: 4 base channels, batch 8, a 4-image grid, FID every `fid_every` steps (0: off)."""
    return ["--base-channels", "4", "--latent-dim", str(latent_dim), "--batch-size", "8", "--num-grid-images", "4",
            "--fid-every", str(fid_every)]


TINY_GAN = tiny_flags(latent_dim=8)
TINY_VAE = tiny_flags(latent_dim=4)


# ---------------------------------------------------------------------------------------------------------------
# Subprocesses.


def subprocess_env(cache: Path | str | None = None, **variables: str) -> dict:
    """The environment of a child process: one intra-op thread, no visible GPU (CUDA_VISIBLE_DEVICES="": the child
    runs on the CPU, as the tests' exact comparisons and gloo process groups expect), GENVISION_CACHE=cache if
    given, plus `variables` (which may show GPUs again)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **variables}
    if cache is not None:
        env["GENVISION_CACHE"] = str(cache)
    return env


def start(argv: list[str], cwd: Path = ROOT, env: dict | None = None) -> subprocess.Popen:
    """`python ARGV...` started with piped text stdout and stderr (tests use the `start_process` fixture instead)."""
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=subprocess_env() if env is None else env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_strays(processes: list[subprocess.Popen]) -> None:
    """Kill and reap every process of `processes` that is still running."""
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a started process; one still running after `timeout` s is killed first."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    return proc.returncode, stdout, stderr


def finish(proc: subprocess.Popen, what: str, timeout: float = 300,
           forbidden: tuple[str, ...] = ("Traceback",)) -> str:
    """stdout of a started process that must exit 0 with none of `forbidden` on stderr; `what` names it on failure."""
    code, stdout, stderr = wait(proc, timeout)
    assert code == 0, f"{what}: exit {code}\n{stderr[-3000:]}"
    for word in forbidden:
        assert word not in stderr, f"{what}:\n{stderr[-3000:]}"
    return stdout


def run_at_once(jobs: dict[str, tuple[list[str], Path]], start, limit: int = 4,
                timeout: float = 300) -> dict[str, tuple[int, str, str, float]]:
    """name -> (exit code, stdout, stderr, seconds) of `python ARGV...` (argv, cwd) for every job, `limit` at a time
    (`start` is the start_process fixture): a tiny run's time is mostly importing torch, so independent processes
    are best started together."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    def run(job):
        name, (argv, cwd) = job
        began = time.monotonic()
        proc = start(argv, cwd=cwd)
        return name, (*wait(proc, timeout), time.monotonic() - began)

    with ThreadPoolExecutor(limit) as pool:
        return dict(pool.map(run, jobs.items()))


def run_python(argv: list[str], cwd: Path = ROOT, env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """`python ARGV...` run to the end: the completed process with text stdout and stderr."""
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=subprocess_env() if env is None else env,
                          capture_output=True, text=True, timeout=timeout)


def train_to_completion(script: str, out: Path, *flags: str) -> subprocess.CompletedProcess:
    """`python SCRIPT --out-dir OUT FLAGS...` (train_gan.py, train_vae.py) run to the end; it must exit 0."""
    proc = run_python([script, "--out-dir", str(out), *flags])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_genvision(*args, cache: Path | str | None = None, cwd: Path = ROOT, env: dict | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m genvision ARGS...` (each turned into a string) run to the end, with GENVISION_CACHE=cache if given."""
    return run_python(["-m", "genvision", *map(str, args)], cwd=cwd, env=subprocess_env(cache) if env is None else env,
                      timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------
# The CLI in process, and its one-line errors.


def cli(*argv) -> tuple[int, str, str]:
    """`genvision ARGV...` in process (each turned into a string): (exit code, stdout, stderr); argparse's own errors
    arrive as SystemExit(2)."""
    from genvision.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*map(str, argv)])
        except SystemExit as exit_:
            code = int(exit_.code)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, stderr: str, *words: str, command: str | None = None) -> str:
    """Exit code 2 and exactly one non-blank stderr line, no traceback, holding every word (and starting with
    `genvision COMMAND: error: ` when `command` is given); returns that line."""
    assert code == 2, f"exit {code}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    line = lines[0]
    if command is not None:
        assert line.startswith(f"genvision {command}: error: "), line
    for word in words:
        assert word in line, (word, line)
    return line


def record_calls(monkeypatch, owner, name: str, keyword: str) -> list:
    """Wrap `owner.name` (undone at the end of the test) so that each call still runs and first appends its `keyword`
    argument (None when not given) to the returned list."""
    calls = []
    real = getattr(owner, name)

    def recording(*args, **kwargs):
        calls.append(kwargs.get(keyword))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls


def snapshot(folder: Path) -> dict:
    """Relative path -> SHA-256 of every file ("dir" for a folder) below `folder`: equal snapshots, nothing written."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


# ---------------------------------------------------------------------------------------------------------------
# Run folders and checkpoints.


def saved_config(run: Path, kind: str) -> dict:
    """The config in a run's config.json, which must name `kind` ("gan", "vae") and the genvision version."""
    saved = json.loads((run / "config.json").read_text())
    assert saved["kind"] == kind and saved["genvision_version"]
    return saved["config"]


def metrics_records(run: Path) -> list[dict]:
    """Every record of a run's metrics.jsonl, in order."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def logged_losses(run: Path) -> list[dict]:
    """The records of metrics.jsonl without the wall-clock throughput (img_per_s), the part a resume must repeat."""
    return [{k: v for k, v in record.items() if k != "img_per_s"} for record in metrics_records(run)]


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder's weights.safetensors, keyed "role.name"."""
    from safetensors.torch import load_file

    return load_file(folder / "weights.safetensors")


def load_state(folder: Path) -> dict:
    """A checkpoint folder's state.pt (optimizers, RNGs, noise, data position, ...), loaded weights_only."""
    return torch.load(folder / "state.pt", weights_only=True)


def assert_same(a, b, where: str = "") -> None:
    """Recursive exact equality of plain state: tensors by torch.equal (and dtype/shape), floats NaN-aware."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_same_checkpoints(a_dir: Path, b_dir: Path) -> tuple[dict, dict, dict, dict]:
    """Every tensor of two checkpoints' weights.safetensors and everything in their state.pt are equal (assert_same);
    returns (weights a, weights b, state a, state b) for further checks."""
    weights_a, weights_b = load_weights(a_dir), load_weights(b_dir)
    assert_same(weights_a, weights_b, "weights")
    state_a, state_b = load_state(a_dir), load_state(b_dir)
    assert_same(state_a, state_b, "state")
    return weights_a, weights_b, state_a, state_b


def assert_same_next_noise(draws, state_a: dict, state_b: dict, earlier: dict) -> None:
    """One process's noise generator: `draws(noise states)` (its next draws) are equal in two checkpoint states, and
    differ from those of an earlier checkpoint's state (the generator moved on)."""
    assert state_a["noise"].shape[0] == state_a["world_size"] == 1
    assert_same(draws(state_a["noise"]), draws(state_b["noise"]), "next noise draws")
    assert not torch.equal(draws(earlier["noise"])[0], draws(state_a["noise"])[0])  # the noise state moved on


def assert_same_checkpoint_metadata(a_dir: Path, b_dir: Path) -> None:
    """The checkpoint.json of two checkpoints are equal but for the config's resume and out_dir (the runs' own) and
    the measured wall time (present in both)."""
    meta_a = json.loads((a_dir / "checkpoint.json").read_text())
    meta_b = json.loads((b_dir / "checkpoint.json").read_text())
    for meta in (meta_a, meta_b):
        del meta["config"]["resume"], meta["config"]["out_dir"]
        assert meta.pop("wall_time_s") > 0
    assert meta_a == meta_b


def png_size_and_mode(path: Path) -> tuple[tuple[int, int], str]:
    """((width, height), PIL mode) of a file that must be a complete PNG."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.load()
        return image.size, image.mode


# ---------------------------------------------------------------------------------------------------------------
# Tiny files: a classifier, PNG folders, random InceptionV3 weights.


def make_classifier(path: Path, seed: int = 0, num_features: int = 32, multi_depth: bool = False) -> None:
    """A random tiny classifier whose BatchNorm statistics are calibrated on real digits (so features vary); its FID
    features are its feature layer (`num_features` of them), as 0.1.0's were, or with `multi_depth` the semantic and
    low-level blocks, calibrated on the same digits."""
    from torch import nn

    from genvision.data import load_dataset
    from genvision.imageconv import to_model_range
    from genvision.models.classifier import Classifier
    from genvision.weights import save_classifier

    torch.manual_seed(seed)
    model = Classifier(base_channels=8, feature_width=num_features, multi_depth=multi_depth)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: one pass sets the running statistics
    model.train()
    digits = to_model_range(load_dataset("mnist5k:test").images[:256])
    with torch.no_grad():
        model(digits)
    if multi_depth:
        model.calibrate(digits.split(128))
    save_classifier(model.eval(), path, {"dataset": "random-test"})


def noise_images(count: int, seed: int = 0, channels: int = 1, size: int = 32) -> torch.Tensor:
    """`count` uniform-noise uint8 images (N, C, H, W), seeded."""
    return torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def write_pngs(images: torch.Tensor, folder: Path) -> None:
    """uint8 (N, C, H, W) -> folder/0000.png ... exactly as a sample writer would."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        array = image.permute(1, 2, 0).numpy()
        pil = Image.fromarray(array[..., 0], "L") if array.shape[-1] == 1 else Image.fromarray(array, "RGB")
        pil.save(folder / f"{index:04d}.png")


def write_random_inception_weights(path: Path) -> None:
    """torch-fidelity's InceptionV3 with its random initialisation (seed 0), saved as a plain state dict; skips the
    test when torch-fidelity is not installed."""
    pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    from genvision.metrics.extractors import save_random_inception_weights

    save_random_inception_weights(path)


# ---------------------------------------------------------------------------------------------------------------
# A loopback HTTP server for download tests.


@contextlib.contextmanager
def serve_files(files: dict, max_requests: int = 4, timeout_s: float = 60.0):
    """Serve `files` (URL path -> bytes, or a function that writes the whole response through the request handler it
    is given; anything else is 404) on 127.0.0.1 at a free port; yields (base URL, list of the paths requested). It
    answers at most `max_requests` requests and stops by itself after `timeout_s` seconds or when the block ends,
    whichever comes first."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    requested: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            requested.append(self.path)
            if len(requested) > max_requests or self.path not in files:
                self.send_error(404 if self.path not in files else 503)
                return
            body = files[self.path]
            if callable(body):
                body(self)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(timeout_s, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def hub_checkpoints(torch_home: Path) -> Path:
    """Where torch.hub (and genvision) cache weights under a given $TORCH_HOME."""
    return torch_home / "hub" / "checkpoints"


def cached(torch_home: Path, source: Path, name: str) -> Path:
    """Copy `source` into the hub cache of `torch_home` as `name`; returns the copy."""
    import shutil

    folder = hub_checkpoints(torch_home)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / name)
    return folder / name


def named_by_hash(path: Path, stem: str = "weights-inception-test") -> str:
    """torch.hub's convention for `path`'s bytes: STEM-<first 8 hex digits of its SHA-256>.pth."""
    return f"{stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pth"


def tensorboard_events(run: Path) -> tuple[dict, dict]:
    """(scalar tag -> [(step, value)], image tag -> [step]) of a run's TensorBoard folder, as TensorBoard reads it
    (its EventAccumulator purges what a session logged past the step a later session resumed from)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in tags["scalars"]}
    images = {tag: [event.step for event in accumulator.Images(tag)] for tag in tags["images"]}
    return scalars, images


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for torchrun's rendezvous)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
