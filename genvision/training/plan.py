"""Planning a generative training run: every check and every resolved field, before anything is loaded or written.

`plan_run` turns the config a user gave (flags, or keywords of the Python API) into one immutable `RunPlan`: the
checkpoint `--resume` names, merged with the run's saved config; `--features auto` resolved; the run folder checked
(one run per folder; checked again by `recheck_run_dir` under the folder's lock, just before the first write).
`--dry-run` runs exactly these checks and takes no lock. Once the accelerator and the data exist, `RunPlan.resolved`
fills in the two fields only they can know (`mixed_precision`, `channels`); the config of that final plan is what
config.json and every checkpoint record (`common.config_record`), and nothing changes it afterwards.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from genvision.checkpoint import Checkpoint, check_architecture, check_kind, latest_checkpoint, read_checkpoint
from genvision.errors import UsageError
from genvision.training import common

# What a GAN or VAE training run writes into its folder: a folder holding any of these belongs to that run.
GENERATIVE_RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "final.png", "losses.png", "report.html",
                        "checkpoints", "samples", "tensorboard")
RUN_CHOICES = ("continue it with --resume auto, start afresh with --overwrite (removes those files), or choose another "
               "--out-dir")
COMMAND_LINE_ONLY = ("out_dir", "resume", "overwrite")  # never restored from a resumed run's saved config


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What `plan_run` decided before any data is loaded or file written."""

    config: Any  # the resolved config: a resumed run's saved one with the given flags applied, --features resolved
    kind: str  # "gan" or "vae": the checkpoint kind of the task
    run_dir: Path
    checkpoint: Checkpoint | None  # the checkpoint to resume from; None for a new run
    earlier_files: tuple[Path, ...]  # an earlier run's files that --overwrite removes when the run starts
    finished: bool  # the checkpoint is already at --num-steps: nothing to train

    def resolved(self, **fields: Any) -> "RunPlan":
        """This plan with the fields only the running process knows (the accelerator's `mixed_precision`, the
        data's `channels`) filled in: the final config of the run."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, **fields))

    @property
    def start_step(self) -> int:
        return self.checkpoint.step if self.checkpoint is not None else 0


def find_resume_checkpoint(resume: str, run_dir: Path, kind: str) -> Checkpoint | None:
    """The checkpoint `--resume` names ('auto' = newest of run_dir; None to start fresh), checked for kind."""
    if not resume:
        return None
    path = latest_checkpoint(run_dir) if resume == "auto" else Path(resume)
    if path is None:
        return None
    checkpoint = read_checkpoint(path)
    check_kind(checkpoint, kind, "--resume")
    return checkpoint


def resumed_config(config, checkpoint: Checkpoint, given: set[str] | None = None):
    """The run's saved config (checkpoint.json), with the fields in `given` (the flags on the command line) taken
    from `config` instead; `out_dir`, `resume` and `overwrite` always come from `config`.

    `given=None` (a call from Python) counts every field that differs from its default as given. Runs saved before
    --features existed were scored by the classifier, so that is their feature space unless --features is given.
    """
    fields = dataclasses.fields(config)
    if given is None:
        given = {f.name for f in fields if getattr(config, f.name) != f.default}
    names = {f.name for f in fields}
    keep = set(given) | set(COMMAND_LINE_ONLY)
    values = {name: value for name, value in checkpoint.config.items() if name in names and name not in keep}
    values.update({name: getattr(config, name) for name in keep})
    if "features" not in checkpoint.config and "features" not in keep:
        values["features"] = "classifier"
    merged = type(config)(**values)
    merged.validate()
    return merged


def plan_run(task_class, config, given: set[str] | None = None) -> RunPlan:
    """Every check a training run can make without loading data, in the order a user would fix them (`--dry-run`
    runs exactly these): the checkpoint to resume, the run folder (one run per folder), the resumed config, dataset
    specs and --classifier file, the checkpoint's architecture, and --num-steps against the checkpoint's step."""
    kind, run_dir = task_class.kind, Path(config.out_dir)
    if config.resume:  # a resumed run writes into its folder, never through a link: checked before a checkpoint is read
        common.refuse_linked_run_files(run_dir, GENERATIVE_RUN_FILES, f"--resume {config.resume}")
    checkpoint = find_resume_checkpoint(config.resume, run_dir, kind)
    if checkpoint is None:
        config = checked_inputs(config)
        return RunPlan(config, kind, run_dir, None, check_run_dir(config, run_dir, None), False)
    check_run_dir(config, run_dir, checkpoint)
    config = checked_inputs(resumed_config(config, checkpoint, given))
    check_architecture(checkpoint, common.config_record(config), task_class.architecture_fields)
    if kind == "vae":
        check_same_prior(checkpoint, config)
    if config.num_steps < checkpoint.step:
        raise UsageError(f"--num-steps {config.num_steps} is below step {checkpoint.step} of {checkpoint.path}; give "
                         f"--num-steps {checkpoint.step} or more")
    return RunPlan(config, kind, run_dir, checkpoint, (), config.num_steps == checkpoint.step)


def check_run_dir(config, run_dir: Path, checkpoint: Checkpoint | None) -> tuple[Path, ...]:
    """One run per folder: a new run into a folder holding a run's files is refused without --overwrite (with it,
    those files are returned, for the run to remove), as are --resume auto of a folder with no checkpoint to continue
    and a checkpoint continued into a folder that is not free. Symbolic links count as files (`earlier_run_files`)."""
    if checkpoint is None:
        if config.resume == "auto" and any(os.path.lexists(run_dir / name) for name in GENERATIVE_RUN_FILES):
            raise UsageError(f"--resume auto: {run_dir} holds a run with no committed checkpoint to continue from; "
                             "start afresh with --overwrite, or choose another --out-dir")
        return tuple(common.earlier_run_files(run_dir, GENERATIVE_RUN_FILES, config.overwrite, RUN_CHOICES))
    if checkpoint.path.resolve().parent.parent != run_dir.resolve():  # continuing elsewhere: into a free folder only
        common.earlier_run_files(run_dir, GENERATIVE_RUN_FILES, False,
                                 "resume into a folder of its own (another --out-dir)")
    return ()


def recheck_run_dir(plan: RunPlan) -> RunPlan:
    """The plan's checks of its run folder, made again by the main process once it holds the folder's lock
    (`common.claim_run_dir`): another run may have written there (and ended) since the plan. Returns the plan with
    the earlier files --overwrite removes as they are now; a --resume auto whose folder gained a newer checkpoint
    meanwhile is refused (run the command again)."""
    config, run_dir, checkpoint = plan.config, plan.run_dir, plan.checkpoint
    if config.resume:
        common.refuse_linked_run_files(run_dir, GENERATIVE_RUN_FILES, f"--resume {config.resume}")
        newest = latest_checkpoint(run_dir) if config.resume == "auto" else None
        if checkpoint is not None and config.resume == "auto" and newest != checkpoint.path:
            raise UsageError(f"--resume auto: {run_dir} changed since this run was planned (it was to continue from "
                             f"{checkpoint.path}, its newest checkpoint is now {newest}); run the command again")
    return dataclasses.replace(plan, earlier_files=check_run_dir(config, run_dir, checkpoint))


def checked_inputs(config):
    """The dataset specs (names, splits, folders), the --classifier file, the trackers and the FID extractor,
    checked without loading any of them; returns `config` with --features resolved."""
    from genvision.data import check_dataset_specs

    check_dataset_specs(config)
    conditional_class_names(config)
    if config.classifier and not Path(config.classifier).is_file():
        raise UsageError(f"--classifier {config.classifier}: no such file (expected a .safetensors file written by "
                         "genvision train-classifier)")
    features = planned_features(config)
    common.check_trackers(config.report_to)
    return config if features == config.features else dataclasses.replace(config, features=features)


def conditional_class_names(config) -> tuple[str, ...]:
    """The class names of a --conditional run's --dataset (`data.class_names`: read without decoding; an unlabelled
    or one-class dataset refused in one line), () for an unconditional run. A VAE's held-out split (--eval-dataset,
    whose labels its held-out ELBO conditions on) must have as many classes."""
    from genvision.data import class_names

    if not getattr(config, "conditional", False):
        return ()
    names = class_names(config.dataset, "--dataset", config, needs="--conditional")
    resolved_eval = getattr(config, "resolved_eval_dataset", None)
    if resolved_eval is not None and resolved_eval() != config.dataset:
        eval_names = class_names(resolved_eval(), "--eval-dataset", config, needs="--conditional")
        if len(eval_names) != len(names):
            raise UsageError(f"--eval-dataset {resolved_eval()} has {len(eval_names)} classes but --dataset "
                             f"{config.dataset} has {len(names)}; a --conditional run needs the same classes")
    return names


def planned_features(config) -> str:
    """``--features`` with ``auto`` resolved (saved resolved, so a resumed run keeps its feature space), after
    checking that the extractor exists: the shipped classifier for the FID reference, or Inception weights found by
    the main process (with --download, missing weights are fetched later by `fetch_features`, never by a --dry-run).
    Nothing to check with --fid-every 0."""
    from genvision.metrics.extractors import auto_features, import_torch_fidelity_inception

    if not config.fid_every:
        return config.features
    reference = config.fid_reference or config.dataset
    main = is_main_launch_process()
    features = config.features
    if features == "auto":
        features = auto_features(classifier=config.classifier, inception_weights=config.inception_weights,
                                 download=config.download or not main, datasets=[reference],
                                 what=f"--features auto for FID against {reference}",
                                 more_fixes=", or train without FID (--fid-every 0)")
    if features == "classifier" and not config.classifier:
        from genvision.weights import shipped_classifier_path

        shipped_classifier_path(reference)
    if features == "inception" and main:
        from genvision.metrics import inception_weights

        import_torch_fidelity_inception()
        if not config.download:
            inception_weights.resolve(config.inception_weights)
        else:
            inception_weights.find(config.inception_weights, warn=False)  # a bad file named by the user fails now
    return features


def check_same_prior(checkpoint: Checkpoint, config) -> None:
    """A resumed VAE run with FID on keeps sampling its FID from the prior it started with (--prior, and with gmm
    --prior-components), or its best FID would compare samples of two priors; runs of genvision 0.1.0 used N(0, I)."""
    if not config.fid_every:
        return
    saved = checkpoint.config
    before = (saved.get("prior", "normal"), saved.get("prior_components", config.prior_components))
    now = (config.prior, config.prior_components)
    if before[0] == "normal":
        before, now = before[:1], now[:1]  # the mixture size does not matter to N(0, I)
    if before != now:
        def flags(values: tuple) -> str:
            return " ".join(f"{flag} {value}" for flag, value in zip(("--prior", "--prior-components"), values))

        raise UsageError(f"{checkpoint.path} scored FID with {flags(before)}, but this resume asks for {flags(now)}; "
                         f"resume with {flags(before)}, turn FID off (--fid-every 0), or start a new run")


def check_same_extractor(checkpoint: Checkpoint | None, extractor: str) -> None:
    """A resumed run keeps scoring in its own feature space: the extractor (id@hash) its checkpoint recorded must be
    the one found now, or the best-by-FID bookkeeping would compare numbers on two scales."""
    earlier = checkpoint.meta.get("fid_extractor") if checkpoint is not None else None
    if earlier and earlier != extractor:
        raise UsageError(f"{checkpoint.path} scored FID with {earlier}, but the extractor found now is {extractor}; "
                         "pass --inception-weights (or --classifier) with the file the run started with, or start a "
                         "new run")


def fetch_features(config) -> None:
    """With --download, fetch missing Inception weights on the main process before any data is decoded or file
    written (a failed download costs nothing)."""
    if config.fid_every and config.features == "inception" and config.download and is_main_launch_process():
        from genvision.metrics import inception_weights

        inception_weights.resolve(config.inception_weights, download=True)


def is_main_launch_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (or a single process), before any Accelerator exists."""
    return int(os.environ.get("RANK", "0")) == 0
