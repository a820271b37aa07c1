"""Pieces every training loop shares: the accelerator, seeding, the run folder, and metric logging."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import random
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from genvision.constants import PROCESS_GROUP_TIMEOUT_MINUTES
from genvision.errors import UsageError
from genvision.fileio import append_jsonl, write_json
from genvision.version import __version__


TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # --report-to name -> its package
PROJECT_NAME = "genvision"  # the W&B project / MLflow experiment of every run (the run is named after its folder)


def tracker_names(report_to: str = "none") -> list[str]:
    """The trackers `--report-to` names: "none" -> [], "all" -> every one whose package is installed."""
    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return [name for name, package in TRACKERS.items() if importlib.util.find_spec(package) is not None]
    return names


def check_trackers(report_to: str) -> None:
    """A tracker whose package is missing is one line naming the package, before anything is loaded or written."""
    for name in tracker_names(report_to):
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UsageError(f"--report-to {name} needs the {TRACKERS[name]} package, which is not installed: "
                             f"pip install {TRACKERS[name]} (or choose --report-to tensorboard or none)")


def make_accelerator(mixed_precision: str = "auto", report_to: str = "none", run_dir: Path | None = None,
                     resume_step: int = 0, allow_tf32: bool = True,
                     process_group_timeout: float = PROCESS_GROUP_TIMEOUT_MINUTES):
    """An Accelerator for this process: picks up `accelerate launch`/`torchrun` env, CUDA if present, else CPU.

    `mixed_precision` "auto" leaves the choice to Accelerate (`accelerate launch --mixed_precision`, its config
    file, $ACCELERATE_MIXED_PRECISION; else no autocast): passing "no" explicitly would override them silently.
    `report_to` names the experiment trackers (`tracker_names`); TensorBoard writes to ``run_dir/tensorboard``, and
    a run resumed at `resume_step` purges what an earlier session logged after it (TensorBoard's ``purge_step``),
    so the resumed run continues the same curves without duplicated steps. `start_trackers` starts them.
    On CUDA the backend flags of `configure_backends` are set. Under torchrun / accelerate launch the process group
    starts with `process_group_timeout` minutes as its timeout (`process_group_kwargs`).
    """
    from accelerate import Accelerator

    if mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UsageError("--mixed-precision fp16 needs a CUDA GPU; use bf16 or no on the CPU")
    log_with: list = []
    for name in tracker_names(report_to):
        if name == "tensorboard":
            from accelerate.tracking import TensorBoardTracker

            log_with.append(TensorBoardTracker("tensorboard", str(run_dir), purge_step=resume_step + 1 if resume_step
                                               else None))
        else:
            log_with.append(name)
    # Under torchrun / accelerate launch on a machine without GPUs, Accelerate only sets up its gloo (MULTI_CPU)
    # process group when told cpu=True; otherwise every process silently trains alone as "rank 0 of 1".
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    precision = {} if mixed_precision == "auto" else {"mixed_precision": mixed_precision}
    accelerator = Accelerator(**precision, cpu=launched and not torch.cuda.is_available(),
                              log_with=log_with or None, project_dir=str(run_dir) if log_with else None,
                              kwargs_handlers=[process_group_kwargs(process_group_timeout)])
    if accelerator.mixed_precision == "fp16" and accelerator.device.type != "cuda":
        raise UsageError("mixed precision fp16 (from Accelerate's config or $ACCELERATE_MIXED_PRECISION) needs a "
                         "CUDA GPU; use bf16 or no on the CPU")
    configure_backends(accelerator.device, allow_tf32)
    return accelerator


def process_group_kwargs(minutes: float):
    """Accelerate's `InitProcessGroupKwargs` with a timeout of `minutes`: how long a rank waits in a collective or
    barrier (rank 0 alone writing the end-of-run report, local rank 0 decoding a dataset) before the run is stopped;
    NCCL's default is 10 minutes, gloo's 30.

    Accelerate hands `init_process_group` only the values that differ from its defaults, NCCL's 10 minutes among
    them, so it would drop exactly 10 and gloo would wait 30: that one is handed over 1 µs longer (torch counts
    milliseconds)."""
    from accelerate.utils import InitProcessGroupKwargs

    timeout = timedelta(minutes=minutes)
    if timeout == InitProcessGroupKwargs().timeout:
        timeout += timedelta(microseconds=1)
    return InitProcessGroupKwargs(timeout=timeout)


def configure_backends(device: torch.device, allow_tf32: bool = True) -> None:
    """On CUDA: TF32 tensor cores for float32 matmuls and cuDNN convolutions (`allow_tf32`; Ampere and newer) and
    cuDNN's autotuner (`cudnn.benchmark`: the step's shapes never change). Nothing to set on the CPU."""
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cudnn.benchmark = True


def start_trackers(accelerator, run_dir: Path, config) -> None:
    """Start the accelerator's trackers (main process) with the resolved config as hyper-parameters."""
    hyperparameters = {key: value for key, value in dataclasses.asdict(config).items()
                       if isinstance(value, (bool, int, float, str))}
    accelerator.init_trackers(PROJECT_NAME, config=hyperparameters,
                              init_kwargs={"wandb": {"name": run_dir.name, "dir": str(run_dir)}})


def log_images(accelerator, images: dict, step: int) -> None:
    """Send uint8 (H, W, C) image grids to the trackers that take images (TensorBoard, W&B) at `step`."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({key: grid[None] for key, grid in images.items()}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({key: [grid] for key, grid in images.items()}, step=step)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def earlier_run_files(run_dir: Path, names: tuple[str, ...], overwrite: bool, choices: str) -> list[Path]:
    """The files of an earlier run in `run_dir` (those of `names` present), which `--overwrite` will remove.

    A run folder belongs to one run: without `overwrite`, any of them is refused in one line naming the folder, what
    it holds and `choices` (the ways out), before anything is read or written. A path that is a file is refused too.
    A symbolic link counts as present, a dangling one too (`--overwrite` removes the link, never its target).
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out-dir {run_dir} is a file, expected a folder")
    found = [run_dir / name for name in names if os.path.lexists(run_dir / name)]
    if found and not overwrite:
        held = ", ".join(path.name for path in found)
        raise UsageError(f"--out-dir {run_dir} holds an earlier run ({held}); {choices}")
    return found


def linked_run_files(run_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """The symbolic links among a run's files (`names` in `run_dir`) and anywhere inside its folders, sorted; the
    folders are walked without following a link."""
    links = []
    for name in names:
        path = run_dir / name
        if path.is_symlink():
            links.append(path)
        elif path.is_dir():
            for folder, subfolders, files in os.walk(path):
                links += [Path(folder, entry) for entry in subfolders + files if os.path.islink(Path(folder, entry))]
    return sorted(links)


def refuse_linked_run_files(run_dir: Path, names: tuple[str, ...], flag: str) -> None:
    """A run continued in `run_dir` (`flag`: "--resume auto", ...) would write through a symbolic link among its files
    (`linked_run_files`): refused in one line naming the first; a genvision run folder never holds one."""
    links = linked_run_files(run_dir, names)
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        raise UsageError(f"{flag}: {links[0]} in --out-dir {run_dir} is a symbolic link{more}, and a genvision run "
                         "folder holds none (a write would follow it out of the folder); remove it, or start afresh "
                         "with --overwrite or in another --out-dir")


def remove_run_files(paths: list[Path]) -> None:
    """Delete an earlier run's files and folders (what `earlier_run_files` found), for `--overwrite`: a symbolic link
    is removed itself, never its target (`shutil.rmtree` removes links inside a folder without following them)."""
    import shutil

    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def prepare_run_dir(out_dir: str | Path) -> Path:
    """Create the run folder (and parents); refuse a path that is a file."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out-dir {path} is a file, expected a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


LOCK_FILE = ".genvision.lock"  # in a run folder while a run writes there; not a run file (removed when it ends)


class RunFolderLock:
    """An exclusive `fcntl.flock` on the run folder's LOCK_FILE, held by the one process that writes the run (rank 0)
    from just before its first write until `release`, or until the process dies (the kernel drops the lock)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        """Remove the lock file (so a finished run leaves its folder as before), then drop the lock. The file goes
        first: a run that opened it meanwhile sees, once it holds the lock, that the path no longer names it."""
        if self.fd < 0:
            return
        try:
            if _same_file(self.path, self.fd):
                os.unlink(self.path)
        finally:
            os.close(self.fd)
            self.fd = -1


def _same_file(path: Path, fd: int) -> bool:
    """Whether `path` (not followed) still names the file open as `fd`."""
    try:
        named = os.lstat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def lock_run_dir(run_dir: Path) -> RunFolderLock | None:
    """Create the run folder (`prepare_run_dir`) and lock it for this process; a folder another process holds is
    refused in one line naming it and that process's pid. None where files cannot be locked (no fcntl, or a file
    system without locks: a warning line, and the run goes on as it did before run folders were locked)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    prepare_run_dir(run_dir)
    path = run_dir / LOCK_FILE
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):  # a fresh lock file is needed only when the run before us ended between open and flock
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as error:
            if os.path.islink(path):
                raise UsageError(f"--out-dir {run_dir}: {path} is a symbolic link, and a genvision run folder holds "
                                 "none; remove it") from None
            raise UsageError(f"--out-dir {run_dir}: cannot create its lock file {LOCK_FILE} ({error.strerror})"
                             ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise UsageError(f"--out-dir {run_dir} is in use by another genvision run{pid}; wait for it to end, or "
                             "choose another --out-dir") from None
        except OSError as error:
            os.close(fd)
            print(f"warning: --out-dir {run_dir} cannot be locked ({error.strerror}); make sure no other run writes "
                  "into it", file=sys.stderr, flush=True)
            return None
        if _same_file(path, fd):  # else the run before us removed it between our open and our lock: open anew
            break
        os.close(fd)
    else:
        raise UsageError(f"--out-dir {run_dir}: its lock file {LOCK_FILE} keeps being replaced; is another run "
                         "starting there?")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunFolderLock(path, fd)


def claim_run_dir(accelerator, run_dir: Path, recheck: Callable[[], Any]) -> tuple[RunFolderLock | None, Any]:
    """(lock, what `recheck` returned): the main process locks the run folder (`lock_run_dir`), then runs `recheck`
    (the plan's checks of the folder again: a run that finished since the plan left its files there), before any
    write. Every process learns the outcome from the main process through one collective it takes part in whether or
    not the main process failed, so a refusal stops every rank with the same one-line error instead of leaving the
    others waiting. Other processes get (None, None)."""
    lock, result, failure = None, None, None
    if accelerator.is_main_process:
        try:
            lock = lock_run_dir(run_dir)
            result = recheck()
        except Exception as error:  # noqa: BLE001 - re-raised below, after the other ranks have heard of it
            failure = error
            if lock is not None:
                lock.release()
                lock = None
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = broadcast_object_list([None if failure is None else str(failure)], from_process=0)[0]
        if message is not None and failure is None:
            failure = UsageError(message)
    if failure is not None:
        raise failure
    return lock, result


def config_record(config) -> dict:
    """The config as config.json and every checkpoint record it: every field, as planned and resolved."""
    return dataclasses.asdict(config)


def write_config(run_dir: Path, config, kind: str, classes: dict | None = None) -> None:
    """config.json, the one writer of it for every kind of run: the resolved config, its kind and the version (and
    a conditional run's `class_record`)."""
    write_json(run_dir / "config.json", {"kind": kind, "genvision_version": __version__,
                                         "config": config_record(config), **(classes or {})})


def set_classes(task, names: tuple[str, ...]) -> None:
    """A task's classes: `class_names` (() when unconditional), `num_classes` (0 when unconditional) and
    `class_counts`, the training images of each class (`task.batches.class_counts`)."""
    task.class_names, task.num_classes = tuple(names), len(names)
    task.class_counts = task.batches.class_counts(len(names)) if names else ()


def class_record(task) -> dict:
    """What config.json and every checkpoint.json of a conditional run record of its classes: ``class_names`` and
    ``class_counts`` (training images per class, same order); {} for an unconditional run."""
    names = getattr(task, "class_names", ())
    return {"class_names": list(names), "class_counts": list(task.class_counts)} if names else {}


GRID_COLUMNS = 8  # a conditional run's sample grid: one row per class, this many fixed draws in each


def set_fixed_draws(task, standard_draws, columns: int = GRID_COLUMNS) -> None:
    """The draws of a task's sample grids (`fixed_noise`, `fixed_uniforms`, on the task's device; `fixed_labels`):
    --num-grid-images draws of seed + 1, unconditional (`fixed_labels` None); a conditional run's grid has one row
    per class, the same `columns` draws of seed + 1 in every row (`fixed_labels` the row's class)."""
    config = task.config
    if not task.num_classes:
        noise, uniforms = standard_draws(config.num_grid_images, config.latent_dim, seed=config.seed + 1)
        task.fixed_noise, task.fixed_uniforms, task.fixed_labels = noise.to(task.accelerator.device), uniforms, None
        return
    noise, uniforms = standard_draws(columns, config.latent_dim, seed=config.seed + 1)
    task.fixed_noise = noise.repeat(task.num_classes, 1).to(task.accelerator.device)  # (classes * columns, D)
    task.fixed_uniforms = uniforms.repeat(task.num_classes)
    task.fixed_labels = torch.arange(task.num_classes).repeat_interleave(columns).to(task.accelerator.device)


def log_metrics(run_dir: Path, record: dict, accelerator=None, step: int | None = None) -> None:
    """Append one line to metrics.jsonl and send the numbers to Accelerate's trackers (if any were started)."""
    append_jsonl(run_dir / "metrics.jsonl", record)
    if accelerator is not None and accelerator.trackers:
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        accelerator.log(numbers, step=step)


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep only the metrics.jsonl lines up to `step` (atomically): a run resumed from its checkpoint at `step`
    logs the later steps again, and an earlier session may have logged some of them before it stopped."""
    import json

    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)

    def before(line: str) -> bool:
        try:
            return json.loads(line).get("step", 0) <= step
        except ValueError:  # a line cut short when the earlier session was killed
            return False

    kept = [line for line in lines if line.strip() and before(line)]
    if len(kept) != len(lines):
        from genvision.fileio import atomic_write

        with atomic_write(path, "w") as handle:
            handle.writelines(kept)


def rng_state() -> dict:
    """The global host RNG states (Python, NumPy, torch CPU) as plain tensors and numbers; each rank's CUDA RNG is
    saved per rank by `run_state` (`device_rng_state`)."""
    version, python_state, gauss = random.getstate()
    numpy_state = np.random.get_state()
    return {
        "python": torch.tensor(python_state, dtype=torch.int64), "python_version": version,
        "python_gauss": gauss,
        "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)), "numpy_pos": int(numpy_state[2]),
        "numpy_has_gauss": int(numpy_state[3]), "numpy_gauss": float(numpy_state[4]),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved."""
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])  # a "cuda" entry of genvision <= 0.2.0 (rank 0's GPUs) is not used


def plot_losses(metrics_path: Path, out_path: Path, keys: tuple[str, ...], title: str) -> None:
    """Plot `keys` of metrics.jsonl against step (and FID on a second axis when logged) to a PNG, atomically."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genvision.fileio import atomic_save

    metrics_path = Path(metrics_path)  # absent when nothing was logged (--log-every 0): an empty plot
    text = metrics_path.read_text() if metrics_path.is_file() else ""
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key in keys:
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            axis.plot(*zip(*points), label=key, linewidth=1.2)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    fid_points = [(r["step"], r["fid"]) for r in records if "fid" in r]
    handles, labels = axis.get_legend_handles_labels()
    if fid_points:
        fid_axis = axis.twinx()
        line, = fid_axis.plot(*zip(*fid_points), "k.--", label="FID")
        fid_axis.set_ylabel("FID")
        handles, labels = handles + [line], labels + ["FID"]
    axis.legend(handles, labels, loc="upper right")
    figure.tight_layout()
    atomic_save(out_path, lambda tmp: figure.savefig(tmp, format="png"))
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------
# Multi-process helpers (no-ops in a single process). Models stay plain modules: gradients are averaged with one
# all-reduce of a flat buffer, and BatchNorm buffers are broadcast from rank 0 after every step (what DDP does with
# broadcast_buffers), so every rank holds identical weights and a step may call a network more than once.


def average_gradients(module: torch.nn.Module, accelerator) -> None:
    """Average this module's gradients over processes."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def sum_over_processes(tensor: torch.Tensor, accelerator) -> torch.Tensor:
    """`tensor` added over processes (one all-reduce; the tensor itself in a single process)."""
    if accelerator.num_processes == 1:
        return tensor
    return accelerator.reduce(tensor, reduction="sum")


def broadcast_buffers(modules: list[torch.nn.Module], accelerator) -> None:
    """Copy rank 0's floating-point buffers (BatchNorm running statistics) to every rank."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import broadcast

    buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = broadcast(torch.cat([b.reshape(-1) for b in buffers]), from_process=0)
    offset = 0
    for buffer in buffers:
        buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()


def gather_generator_states(noise: torch.Generator, accelerator) -> torch.Tensor:
    """(num_processes, state bytes): every rank's torch.Generator state, for exact multi-process resume."""
    return accelerator.gather(noise.get_state().to(accelerator.device)[None]).cpu()


def restore_generator_state(noise: torch.Generator, states: torch.Tensor, step: int, accelerator) -> None:
    """Load this rank's saved state. With a different process count, or saved on another kind of device (a CUDA
    generator state is 16 bytes, a CPU one 5056), reseed deterministically per rank instead."""
    same_device = states.ndim == 2 and states.shape[1] == noise.get_state().numel()
    if states.shape[0] == accelerator.num_processes and same_device:
        noise.set_state(states[accelerator.process_index].clone())  # a row view with an offset segfaults
    else:
        noise.manual_seed(int(states[0].sum()) + step + accelerator.process_index)


def device_rng_state(accelerator) -> torch.Tensor | None:
    """(num_processes, bytes): every rank's own CUDA RNG state (dropout-like ops, cuDNN), None on the CPU."""
    if accelerator.device.type != "cuda":
        return None
    return accelerator.gather(torch.cuda.get_rng_state(accelerator.device).to(accelerator.device)[None]).cpu()


def restore_device_rng_state(states: torch.Tensor | None, step: int, accelerator) -> None:
    """Give this rank its own CUDA RNG back; with another process count, or a checkpoint from the CPU, reseed it
    deterministically per rank. Nothing to do on the CPU (its RNG is `rng_state`'s)."""
    if accelerator.device.type != "cuda":
        return
    if states is not None and states.shape[0] == accelerator.num_processes:
        torch.cuda.set_rng_state(states[accelerator.process_index].clone(), accelerator.device)
    else:
        torch.cuda.manual_seed(int(torch.initial_seed()) + step + accelerator.process_index)


def run_state(task) -> dict:
    """The training state every task shares: grad scaler, RNGs (every rank's noise), data position, fixed noise,
    step. `task` has .accelerator, .noise, .batches, .fixed_noise and .step."""
    scaler = task.accelerator.scaler
    return {
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng_state(),
        "noise": gather_generator_states(task.noise, task.accelerator),
        **({"device_rng": device} if (device := device_rng_state(task.accelerator)) is not None else {}),
        "data": task.batches.state_dict(),
        "fixed_noise": task.fixed_noise.cpu(),
        "step": task.step,
    }


def restore_run_state(task, state: dict) -> int:
    """Load what `run_state` saved into `task`; returns the step to continue from."""
    accelerator = task.accelerator
    if accelerator.scaler is not None and state["scaler"]:
        accelerator.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    restore_generator_state(task.noise, state["noise"], state["step"], accelerator)
    restore_device_rng_state(state.get("device_rng"), state["step"], accelerator)
    task.batches.load_state_dict(state["data"])
    task.fixed_noise = state["fixed_noise"].to(accelerator.device)
    task.step = int(state["step"])
    return task.step
