"""The prepared GPU check: every GPU figure of genvision in one call of at most 8 minutes on a machine with one GPU,
written to one JSON file.

Steps, in this order, each a subprocess with its own timeout (a failure or a timeout is recorded and the next step
runs; the JSON file is rewritten after every step, so a check cut short still leaves what it measured):

1. `cuda_tests`: tests/test_cuda.py with the GPU visible (GENVISION_TEST_CUDA=1): classifier calibration on CUDA,
   GAN and VAE steps under bf16 autocast, FID features and a statistics file on CUDA against the CPU's.
2. `train_classifier`: `genvision train-classifier` on mnist5k for 2 epochs, to completion.
3. `train_gan`: `train_gan.py --mixed-precision bf16 --compile --channels-last`, 200 steps with FID (1000
   samples) at 100 and 200.
4. `train_vae`: `train_vae.py`, 200 steps, the same FID, a mixture prior fitted on 2000 images.
5. `fid50k`: the FID of 50,000 generated-like images (uint8 on the host, 32 px RGB) against cached statistics,
   InceptionV3 (torch-fidelity's port) with random weights made here (nothing is downloaded), batches of 500:
   features and statistics on the GPU, then the Fréchet distance; each part timed (target: under 30 s).
6. `bench_train_classic`: `bench_train.py --device cuda --settings classic`, every variant against the usual loop:
   img/s and achieved TFLOP/s (target: a genvision step >= 3x the usual loop's img/s).
7. `bench_fid`: `bench_fid.py --device cuda`.
8. `bench_train_cifar`: `bench_train.py --device cuda --settings cifar`.

The JSON file also records the GPU (nvidia-smi, torch.cuda.get_device_name), torch, CUDA and cuDNN versions, the
commit (git, else --commit), each step's command, timeout, wall time, status and output tail, the figures of the
benchmarks, and the targets with whether they were met.

    bash benchmarks/gpu_check.sh [--json FILE] [--budget-seconds 460] [--workdir DIR] [--commit SHA] [--dry-run]
                                 [--steps cuda_tests,bench_train_classic]

--json defaults to $OUT/gpu_check.json when $OUT is set, else gpu_check.json. --dry-run (for a CPU) checks in under
a minute that every step's command parses, without running it: the training commands with their own --dry-run,
the benchmarks' argument parsers on the exact arguments, the pytest collection of tests/test_cuda.py, and the
imports of the fid50k step; it exits non-zero when one does not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
DEFAULT_BUDGET_S = 460  # the whole check; the call that runs it is allowed 8 minutes (480 s)
OUTPUT_TAIL = 4000  # characters of each step's output kept in the JSON file
FID50K_SAMPLES = 50_000
FID50K_TARGET_S = 30.0
CLASSIC_TARGET_SPEEDUP = 3.0
# Each step's command runs its parser only: `runpy` loads the benchmark as a module (its main() does not run), then
# parse_args() reads the step's arguments and check_args(args), where the benchmark has one, checks the names in them.
PARSE_ONLY = ("import runpy, sys; path = sys.argv[1]; sys.argv = sys.argv[1:]; "
              "module = runpy.run_path(path, run_name='gpu_check_parse_only'); args = module['parse_args'](); "
              "check = module.get('check_args'); check and check(args); print(args)")


@dataclass
class Step:
    """One step of the check: its command, its share of the time (seconds), and how --dry-run checks it."""

    name: str
    command: list[str]
    budget_s: float
    dry_command: list[str]
    env: dict = field(default_factory=dict)
    figures_file: Path | None = None  # a JSON file the step writes; merged into the report as its figures
    run_dir: Path | None = None  # a training run folder: its summary.json becomes the figures


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def parse_only(script: Path, *args: str) -> list[str]:
    return python("-c", PARSE_ONLY, str(script), *args)


def steps(workdir: Path) -> list[Step]:
    """The check's steps (see the module docstring); their budgets add up to ~430 s."""
    runs = workdir / "runs"
    fid_flags = ["--num-fid-samples", "1000", "--report-to", "none", "--overwrite", "--log-every", "50"]
    gan = ["train_gan.py", "--mixed-precision", "bf16", "--compile", "--channels-last", "--num-steps", "200",
           "--fid-every", "100", "--sample-every", "100", "--checkpoint-every", "0", *fid_flags, "--out-dir",
           str(runs / "gan")]
    vae = ["train_vae.py", "--num-steps", "200", "--fid-every", "100", "--sample-every", "100",
           "--checkpoint-every", "0", "--prior-fit-images", "2000", *fid_flags, "--out-dir", str(runs / "vae")]
    classifier = ["-m", "genvision", "train-classifier", "--dataset", "mnist5k:train", "--epochs", "2",
                  "--report-to", "none", "--overwrite", "--out-dir", str(runs / "classifier")]
    pytest = ["-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "tests/test_cuda.py", "-rA"]
    bench_train = ["--device", "cuda", "--variants", "eager,channels_last,compile,bf16,best", "--rounds", "2",
                   "--warmup-steps", "3", "--round-seconds", "0.5", "--workdir", str(workdir / "bench-train")]
    fid50k = [str(Path(__file__).resolve()), "--fid50k", "--workdir", str(workdir), "--json",
              str(workdir / "fid50k.json")]
    bench_fid = ["--device", "cuda", "--repeats", "2", "--workdir", str(workdir / "bench-fid"), "--json",
                 str(workdir / "bench_fid.json")]
    classic = [*bench_train, "--settings", "classic", "--json", str(workdir / "bench_train_classic.json")]
    cifar = [*bench_train, "--settings", "cifar", "--json", str(workdir / "bench_train_cifar.json")]
    return [
        Step("cuda_tests", python(*pytest, "--junitxml", str(workdir / "cuda_tests.xml")), 55,
             python("-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "--collect-only", "tests/test_cuda.py"),
             env={"GENVISION_TEST_CUDA": "1"}),
        Step("train_classifier", python(*classifier), 30, python(*classifier, "--dry-run"),
             run_dir=runs / "classifier"),
        Step("train_gan", python(*gan), 70, python(*gan, "--dry-run"), run_dir=runs / "gan"),
        Step("train_vae", python(*vae), 35, python(*vae, "--dry-run"), run_dir=runs / "vae"),
        Step("fid50k", python(*fid50k), 50, python(*fid50k, "--dry-run"), figures_file=workdir / "fid50k.json"),
        Step("bench_train_classic", python(str(BENCHMARKS / "bench_train.py"), *classic), 95,
             parse_only(BENCHMARKS / "bench_train.py", *classic), figures_file=workdir / "bench_train_classic.json"),
        Step("bench_fid", python(str(BENCHMARKS / "bench_fid.py"), *bench_fid), 40,
             parse_only(BENCHMARKS / "bench_fid.py", *bench_fid), figures_file=workdir / "bench_fid.json"),
        Step("bench_train_cifar", python(str(BENCHMARKS / "bench_train.py"), *cifar), 55,
             parse_only(BENCHMARKS / "bench_train.py", *cifar), figures_file=workdir / "bench_train_cifar.json"),
    ]


def selected_steps(args: argparse.Namespace) -> list[str]:
    """The step names --steps gives ([] for every step)."""
    return [name.strip() for name in args.steps.split(",") if name.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    out = os.environ.get("OUT")
    parser.add_argument("--json", default=str(Path(out) / "gpu_check.json") if out else "gpu_check.json",
                        help="the report (default: $OUT/gpu_check.json when $OUT is set, else gpu_check.json)")
    parser.add_argument("--budget-seconds", type=float, default=DEFAULT_BUDGET_S,
                        help="wall time of the whole check; each step's timeout is its share, plus what earlier "
                             "steps left unused, never past this")
    parser.add_argument("--workdir", default="", help="run folders, PNGs and caches (default: a new temp folder)")
    parser.add_argument("--commit", default="", help="the commit checked, when the checkout has no .git")
    parser.add_argument("--dry-run", action="store_true", help="check that every step's command parses (on a CPU)")
    parser.add_argument("--steps", default="",
                        help="comma-separated step names to run, in the check's order (default: every step; to "
                             "rerun the steps that failed, in a lease too short for the whole check)")
    parser.add_argument("--fid50k", action="store_true", help=argparse.SUPPRESS)  # step 5, in its own process
    parser.add_argument("--num-samples", type=int, default=FID50K_SAMPLES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget_seconds <= 0 or args.num_samples < 2:
        parser.error("--budget-seconds must be > 0 and --num-samples >= 2")
    known = [step.name for step in steps(Path("."))]
    unknown = [name for name in selected_steps(args) if name not in known]
    if unknown:
        parser.error(f"--steps: unknown {', '.join(unknown)}; expected names from {', '.join(known)}")
    return args


# ---------------------------------------------------------------------------------------------------------------
# Running the steps.


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+dirty" if dirty else "")


def machine() -> dict:
    """The GPU, the library versions and the host."""
    info: dict = {"python": platform.python_version(), "host_cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as error:
        info["nvidia_smi"] = f"unavailable: {error}"
    import torch

    info.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    return info


def step_env(workdir: Path, extra: dict) -> dict:
    """The steps' environment: this checkout's genvision first on the path, a private cache and torch hub (nothing
    stale, nothing downloaded: Hugging Face offline, the Inception URL a closed local port), plus `extra`."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
            "GENVISION_CACHE": str(workdir / "cache"), "TORCH_HOME": str(workdir / "torch-home"),
            "GENVISION_INCEPTION_URL": "http://127.0.0.1:9/inception.pth", "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1", **extra}


def run_command(command: list[str], env: dict, timeout: float) -> dict:
    """Run `command` in its own process group from the checkout's root; on timeout that group (the command and what
    it started, e.g. inductor's compile workers) is killed. Returns status, returncode, seconds, output tail."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=max(timeout, 1))
        status = "ok" if process.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output, _ = process.communicate()
        status = "timeout"
    return {"status": status, "returncode": process.returncode, "seconds": round(time.perf_counter() - started, 2),
            "output_tail": (output or "")[-OUTPUT_TAIL:]}


def figures_of(step: Step, workdir: Path) -> dict | None:
    """What a finished step measured: its JSON file, a run's summary.json, or the pytest outcomes."""
    try:
        if step.figures_file is not None and step.figures_file.is_file():
            return json.loads(step.figures_file.read_text())
        if step.run_dir is not None and (step.run_dir / "summary.json").is_file():
            return json.loads((step.run_dir / "summary.json").read_text())
        if step.name == "cuda_tests" and (workdir / "cuda_tests.xml").is_file():
            return junit_outcomes(workdir / "cuda_tests.xml")
    except (OSError, ValueError) as error:
        return {"error": f"unreadable figures: {error}"}
    return None


def junit_outcomes(path: Path) -> dict:
    """{test id: passed | failed | error | skipped (with the message)} of a pytest --junitxml file."""
    import xml.etree.ElementTree as ElementTree

    outcomes = {}
    for case in ElementTree.parse(path).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                message = (found.get("message") or "").splitlines()[0:1]
                outcome = {"failure": "failed"}.get(kind, kind) + (f": {message[0][:300]}" if message else "")
        outcomes[name] = outcome
    return outcomes


def targets(report: dict) -> dict:
    """The two targets: a classic genvision step >= 3x the usual loop's img/s; 50k-sample Inception FID < 30 s."""
    result: dict = {}
    classic = (report["steps"].get("bench_train_classic", {}).get("figures") or {}).get("settings", {}).get("classic")
    if classic:
        ratios = {name: row["vs_baseline"] for name, row in classic["pipelines"].items() if name != "baseline"}
        fastest = max(ratios, key=ratios.get) if ratios else None
        result["classic_step_vs_usual_loop"] = {
            "target": f">= {CLASSIC_TARGET_SPEEDUP}x", "ratios": ratios, "fastest": fastest,
            "met": bool(fastest) and ratios[fastest] >= CLASSIC_TARGET_SPEEDUP,
            "compile_fell_back": classic.get("compile_fell_back", []), "failed": classic.get("failed", {})}
    else:
        result["classic_step_vs_usual_loop"] = {"target": f">= {CLASSIC_TARGET_SPEEDUP}x", "met": None,
                                                "note": "not measured (bench_train_classic did not finish)"}
    fid = report["steps"].get("fid50k", {}).get("figures")
    if fid and "total_s" in fid:
        result["fid50k_inception_seconds"] = {"target": f"< {FID50K_TARGET_S} s", "seconds": fid["total_s"],
                                              "met": fid["total_s"] < FID50K_TARGET_S}
    else:
        result["fid50k_inception_seconds"] = {"target": f"< {FID50K_TARGET_S} s", "met": None,
                                              "note": "not measured (fid50k did not finish)"}
    return result


def write_report(path: Path, report: dict) -> None:
    sys.path.insert(0, str(ROOT))
    from genvision.fileio import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)


def check(args: argparse.Namespace) -> int:
    """Run (or with --dry-run, parse) every step; write the report after each; 0 when every step passed."""
    started = time.perf_counter()
    deadline = started + args.budget_seconds
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genvision-gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json)
    selected = selected_steps(args)
    plan = [step for step in steps(workdir) if not selected or step.name in selected]
    report: dict = {"check": "benchmarks/gpu_check.py", "dry_run": args.dry_run,
                    "commit": args.commit or git_commit() or "unknown (no git; pass --commit)",
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": args.budget_seconds,
                    "workdir": str(workdir), "machine": machine(),
                    "steps_selected": selected or "all", "steps": {}}
    if not args.dry_run and not report["machine"]["cuda_available"]:
        report["error"] = "no CUDA device is visible: run with --dry-run on a CPU"
        write_report(json_path, report)
        print(f"gpu_check: {report['error']}", file=sys.stderr)
        return 2
    if args.dry_run:
        def parse(step: Step) -> tuple[Step, dict]:
            return step, run_command(step.dry_command, step_env(workdir, {**step.env, "CUDA_VISIBLE_DEVICES": ""}),
                                     max(5.0, deadline - time.perf_counter()))

        with ThreadPoolExecutor(max_workers=4) as pool:
            for step, result in pool.map(parse, plan):
                report["steps"][step.name] = {"command": step.command, "checked_with": step.dry_command,
                                              "budget_s": step.budget_s, **result}
                print(f"gpu_check --dry-run: {step.name}: {result['status']} ({result['seconds']} s)")
    else:
        for index, step in enumerate(plan):
            remaining = deadline - time.perf_counter()
            later = sum(s.budget_s for s in plan[index + 1:])
            timeout = min(remaining, max(step.budget_s, remaining - later))
            if timeout < min(5.0, step.budget_s):  # too little left to start it (a GPU process takes seconds)
                report["steps"][step.name] = {"command": step.command, "status": "skipped",
                                              "note": "no time left in --budget-seconds"}
                continue
            print(f"gpu_check: {step.name} (timeout {timeout:.0f} s) ...", flush=True)
            result = run_command(step.command, step_env(workdir, step.env), timeout)
            report["steps"][step.name] = {"command": step.command, "timeout_s": round(timeout, 1), **result,
                                          "figures": figures_of(step, workdir)}
            print(f"gpu_check: {step.name}: {result['status']} in {result['seconds']} s", flush=True)
            report["targets"] = targets(report)
            report["total_s"] = round(time.perf_counter() - started, 1)
            write_report(json_path, report)
    report["total_s"] = round(time.perf_counter() - started, 1)
    if not args.dry_run:
        report["targets"] = targets(report)
    failed = [name for name, step in report["steps"].items() if step["status"] != "ok"]
    report["failed_steps"] = failed
    write_report(json_path, report)
    print(f"gpu_check: {len(plan) - len(failed)}/{len(plan)} steps ok in {report['total_s']} s; report {json_path}"
          + (f"; not ok: {', '.join(failed)}" if failed else ""))
    if not args.workdir:  # a temp folder of this check: its figures are in the report
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------------------
# Step 5: a 50,000-sample FID with random InceptionV3 weights.


def fid50k(args: argparse.Namespace) -> int:
    """Time the FID of `--num-samples` uint8 32 px RGB images (on the host, as decoded or sampled images are)
    against statistics computed beforehand (as a cached reference is): features and statistics on the GPU
    (`sources.generated_statistics`, batches of 500), then the Fréchet distance."""
    sys.path.insert(0, str(ROOT))
    import torch_fidelity  # noqa: F401 - the missing extra fails here, in --dry-run too

    if args.dry_run:
        print("fid50k: imports ok")
        return 0
    import torch

    from genvision.fileio import write_json
    from genvision.metrics.extractors import load_extractor, save_random_inception_weights
    from genvision.metrics.sources import generated_statistics
    from genvision.metrics.stats import frechet_distance

    device = torch.device("cuda")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genvision-fid50k-"))
    weights = workdir / "inception-random.pth"
    save_random_inception_weights(weights)
    extractor = load_extractor("inception", inception_weights=weights, device=device)
    generator = torch.Generator().manual_seed(0)
    reference = torch.randint(0, 256, (5000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    images = torch.randint(0, 256, (args.num_samples, 3, 32, 32), dtype=torch.uint8, generator=generator)
    warm = time.perf_counter()
    statistics = generated_statistics(reference, extractor, 500, device, name="reference", sharded=False)
    torch.cuda.synchronize()
    reference_s = time.perf_counter() - warm
    start = time.perf_counter()
    generated = generated_statistics(images, extractor, 500, device, sharded=False)
    torch.cuda.synchronize()
    features_s = time.perf_counter() - start
    fid = frechet_distance(generated.mu, generated.sigma, statistics.mu, statistics.sigma)
    total_s = time.perf_counter() - start
    figures = {"num_samples": args.num_samples, "image": "uint8 3x32x32 on the host, resized to 299 inside",
               "batch_size": 500, "inception_chunk": extractor.chunk_size(device), "fid": fid,
               "features_and_statistics_s": round(features_s, 3), "frechet_s": round(total_s - features_s, 3),
               "total_s": round(total_s, 3), "img_per_s": round(args.num_samples / features_s, 1),
               "reference_5000_with_warmup_s": round(reference_s, 3), "gpu": torch.cuda.get_device_name(device),
               "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
               "weights": "random (torch-fidelity InceptionV3, seed 0)"}
    print(json.dumps(figures, indent=2))
    if args.json:
        write_json(args.json, figures)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return fid50k(args) if args.fid50k else check(args)


if __name__ == "__main__":
    sys.exit(main())
