"""Does a trained state cost more per training step? Two runs' latest checkpoints trained on in one process.

    python benchmarks/bench_step_states.py RUN_A RUN_B [--block 50] [--rounds 12]

Each run's newest checkpoint (weights, optimizer states, data order, noise) is restored into its own training task
(`GANTask` or `VAETask`, as `--resume` restores it) in this one process, and the two take turns training `--block`
steps at a time, in alternating order (A, B, B, A, ...), for `--rounds` rounds. Prints the images per second of each
block and the ratio of B's total time to A's, with the CPU model. One process and interleaved blocks take the
machine's drift and each process's own speed level out of the comparison: what is left is what the two states' steps
cost (the same networks and batch cost the same unless values matter, as denormal floats would; their count in each
state, and in each layer's output and gradient of one more step, is printed last). Nothing is written: the run
folders are only read. Used in benchmarks/README.md's "wall-time comparison" of the default DCGAN recipes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # runs_at_once

from runs_at_once import cpu_model  # noqa: E402


def restored_task(checkpoint, accelerator):
    """The training task of `checkpoint` (a `genvision.checkpoint.Checkpoint`), restored as `--resume` restores it."""
    from genvision.config import GANConfig, VAEConfig, config_from_dict
    from genvision.training.gan import GANTask
    from genvision.training.vae import VAETask

    config_class, task_class = {"gan": (GANConfig, GANTask), "vae": (VAEConfig, VAETask)}[checkpoint.kind]
    task = task_class(config_from_dict(config_class, checkpoint.config), accelerator)
    task.restore(checkpoint)
    return task


def denormal_counts(task) -> tuple[int, int]:
    """(denormal floats, floats) in the task's modules' parameters, buffers and optimizer states, and in every
    module's output and output gradient during one more training step: denormals (nonzero, below the smallest
    normal float) are the values that make a CPU's floating-point arithmetic slow."""
    import torch

    counts = [0, 0]

    def count(tensor) -> None:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            tiny = torch.finfo(tensor.dtype).tiny
            counts[0] += int(((tensor != 0) & (tensor.abs() < tiny)).sum())
            counts[1] += tensor.numel()

    def on_output(module, inputs, output) -> None:
        count(output)
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(count)

    modules = list({id(m): m for m in vars(task).values() if isinstance(m, torch.nn.Module)}.values())
    optimizers = [o for o in vars(task).values() if isinstance(o, torch.optim.Optimizer)]
    for tensor in [t for m in modules for t in (*m.parameters(), *m.buffers())]:
        count(tensor)
    for state in [s for o in optimizers for s in o.state.values()]:
        for tensor in state.values():
            count(tensor)
    hooks = [leaf.register_forward_hook(on_output) for m in modules for leaf in m.modules()
             if not list(leaf.children())]
    try:
        task.train_step()
    finally:
        for hook in hooks:
            hook.remove()
    return counts[0], counts[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs=2, metavar="RUN", help="two run folders with checkpoints (A, B)")
    parser.add_argument("--block", type=int, default=50, help="training steps per turn")
    parser.add_argument("--rounds", type=int, default=12, help="turns of each run")
    args = parser.parse_args()
    for name in ("block", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    from genvision.checkpoint import latest_checkpoint, read_checkpoint

    for run in args.runs:
        if not run.is_dir() or latest_checkpoint(run) is None:
            parser.error(f"{run}: no checkpoint (expected a run folder with checkpoints/step-*)")
    checkpoints = [read_checkpoint(latest_checkpoint(run)) for run in args.runs]
    if checkpoints[0].kind != checkpoints[1].kind:
        parser.error(f"{args.runs[0]} and {args.runs[1]} are runs of different models "
                     f"({checkpoints[0].kind}, {checkpoints[1].kind}; expected two of one)")

    from accelerate import Accelerator

    accelerator = Accelerator()
    tasks = [restored_task(checkpoint, accelerator) for checkpoint in checkpoints]
    seconds: list[list[float]] = [[], []]
    for round_index in range(args.rounds):
        for which in ((0, 1) if round_index % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            for _ in range(args.block):
                tasks[which].train_step()
            seconds[which].append(time.perf_counter() - start)
    print(f"CPU: {cpu_model()}; {args.rounds} rounds of {args.block} steps each, alternating A/B, B/A")
    for label, run, task, spent in zip("AB", args.runs, tasks, seconds):
        rates = " ".join(f"{args.block * task.images_per_step / s:.0f}" for s in spent)
        print(f"{label} {run} (from step {task.step - args.block * args.rounds}): img/s per block {rates}; "
              f"{sum(spent):.2f} s in all")
    print(f"B / A time per step: {sum(seconds[1]) / sum(seconds[0]):.3f}x")
    for label, task in zip("AB", tasks):
        denormals, total = denormal_counts(task)
        print(f"{label}: {denormals} denormal floats among {total} (weights, buffers, optimizer states, and each "
              f"layer's output and its gradient in one more step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
