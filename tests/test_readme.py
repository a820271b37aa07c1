"""Every command of the README and of the manual in docs/ runs as written, in order, in one fresh folder.

The pages are read in a fixed order, the README first, then the docs/ pages of DOCS_PAGES (every page of docs/ must be
listed there): the README's quick start trains `runs/dcgan` and `runs/vae`, which commands of later pages use, so
the pages share one folder rather than running as self-contained tests. A command that appears again on a later
page (the README's table repeats commands of the manual) runs once, where it first appears.

The commands are read from the pages' ```bash blocks and from the `example` column of their tables. The runs that
later commands use (`runs/dcgan`, `runs/vae` and the class-conditional `runs/cdcgan`, `runs/cvae`) are trained with
tiny models and step counts (the flags are replaced or appended, the rest of the command is kept); every other
training command, and those that need the network (`--download`) or GPUs (`accelerate launch`, `torchrun`), runs as
`--dry-run`, which still parses every flag and makes every check that needs no data (dataset names, run folder, the
checkpoint a `--resume` continues); the other commands that need the network (`download-weights`, `--download`, and
`--features dinov2`, which needs Meta's DINOv2 weights and hours on a CPU: tests/metrics/test_dinov2.py runs it on
random weights) are parsed with the real argument parser but not run; the install and test commands are the suite
itself, and `torchrun -m genvision ...` evaluations are parsed (tests/metrics/test_distributed_fid.py runs them).
Everything else runs exactly as written, with random InceptionV3 weights in $GENVISION_INCEPTION_WEIGHTS standing in
for the official file (which cannot be downloaded here).
`python train_gan.py ARGS` is `genvision train-gan ARGS` (the script is `cli.run_command("train-gan")`).
"""

import re
import shlex
from pathlib import Path

from helpers import ROOT, cli, wait

TRAINING = {"train_gan.py", "train_vae.py", "train-gan", "train-vae"}
TINY_TRAINING = {"--base-channels": "4", "--batch-size": "8", "--num-grid-images": "4", "--fid-every": "0",
                 "--sample-every": "2", "--checkpoint-every": "2", "--log-every": "1"}
TRAINED = {"runs/dcgan", "runs/vae", "runs/cdcgan", "runs/cvae"}  # the runs later commands use are trained (tiny);
# other training: --dry-run
NOT_RUN = {"pip install -e '.[test]'": "the install command (CI runs it)", "python -m pytest": "this suite"}
MAX_PNGS = 100  # `sample --out-dir` writes at most this many of the manual's 10000 PNGs
DOCS_PAGES = ("docs/README.md", "docs/training.md", "docs/evaluation.md", "docs/evaluation-protocol.md",
              "docs/sample.md", "docs/report.md", "docs/train-classifier.md", "docs/datasets.md", "docs/multi-gpu.md",
              "docs/python-api.md", "docs/architecture.md", "docs/security.md")
PAGES = ("README.md", *DOCS_PAGES)  # the order the commands run in


def page_commands(page: str) -> list[str]:
    """The commands of `page`: every ```bash block (continuation lines joined, comments dropped) and the code spans
    of the `example` column of its tables, in page order."""
    text = (ROOT / page).read_text()
    commands = []
    for block, table in re.findall(r"```bash\n(.*?)```|((?:^\|[^\n]*\n)+)", text, flags=re.S | re.M):
        lines = block.replace("\\\n", " ").splitlines() if block else table_examples(table)
        for line in lines:
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(shlex.join(tokens))
    return commands


def table_examples(table: str) -> list[str]:
    """The code spans of the column headed `example` of a markdown table (none when it has no such column)."""
    rows = [[cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip().strip("|"))] for row in table.splitlines()]
    if "example" not in rows[0]:
        return []
    column = rows[0].index("example")
    return [span for row in rows[2:] for span in re.findall(r"`([^`]+)`", row[column])]


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) of every page in PAGES order; a command repeated on a later page only where it first appears."""
    seen, commands = set(), []
    for page in PAGES:
        for command in page_commands(page):
            if command not in seen:
                seen.add(command)
                commands.append((page, command))
    return commands


def test_every_docs_page_is_listed():
    """A new page of docs/ joins DOCS_PAGES, so its commands run too."""
    assert sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md")) == sorted(DOCS_PAGES)


def with_flags(tokens: list[str], flags: dict[str, str]) -> list[str]:
    """`tokens` with each flag of `flags` set to its value (replaced where present, else appended)."""
    tokens = list(tokens)
    for flag, value in flags.items():
        if flag in tokens:
            tokens[tokens.index(flag) + 1] = value
        else:
            tokens += [flag, value]
    return tokens


def as_run(command: str) -> tuple[list[str], bool] | None:
    """(genvision argv, whether it trains) for a documented command; None when not run (see NOT_RUN).

    A command that trains runs as a subprocess of its own, as written (`python train_gan.py ...`); the others (all
    of them quick) run in process through `genvision.cli.main`, the entry point of the `genvision` console script.
    """
    if command in NOT_RUN:
        return None
    tokens = shlex.split(command)
    if tokens[0] == "export":  # environment for the commands of a cluster or mirror: nothing to run here
        return None
    while "=" in tokens[0] and tokens[0].split("=")[0].isidentifier():  # VAR=value COMMAND: the command itself
        tokens = tokens[1:]
    launched = tokens[0] in ("accelerate", "torchrun")
    if launched and "-m" in tokens and tokens[tokens.index("-m") + 1] == "genvision":  # `torchrun -m genvision fid`
        from genvision.cli import build_parser

        build_parser().parse_args(tokens[tokens.index("-m") + 2:])  # every flag exists (tests/metrics/
        return None  # test_distributed_fid.py runs such commands under torchrun)
    if launched:  # GPUs or several processes: check the script's flags only
        tokens = tokens[next(i for i, token in enumerate(tokens) if token.endswith(".py")) - 1:]
        tokens[0] = "python"
    scripts = {"train_gan.py": "train-gan", "train_vae.py": "train-vae"}
    if tokens[0] == "python" and tokens[1] in scripts:
        argv = [scripts[tokens[1]], *tokens[2:]]
    elif tokens[0] == "genvision":
        argv = tokens[1:]
    else:
        raise AssertionError(f"command {command!r}: this test does not know how to run it")
    dinov2 = "--features" in argv and argv[argv.index("--features") + 1] == "dinov2"  # Meta's weights; hours on a CPU
    if not argv[0].startswith("train-") and ("--download" in argv or argv[0] == "download-weights" or dinov2):
        from genvision.cli import build_parser

        build_parser().parse_args(argv)  # every flag and choice exists (a bad one exits 2: SystemExit)
        return None
    if "--download" in argv or launched or (argv[0].startswith("train-") and
                                                                  out_dir(argv) not in TRAINED):
        return [*argv, "--dry-run"], False
    if argv[0] in ("train-gan", "train-vae"):
        return with_flags(argv, {**TINY_TRAINING, "--num-steps": "4" if "--resume" in argv else "2"}), True
    if "--out-dir" in argv and "--num" in argv and int(argv[argv.index("--num") + 1]) > MAX_PNGS:
        return with_flags(argv, {"--num": str(MAX_PNGS)}), False
    return argv, False


def out_dir(argv: list[str]) -> str:
    """The run folder a training command writes (its --out-dir, else the default of its config)."""
    from genvision.config import ClassifierConfig, GANConfig, VAEConfig

    if "--out-dir" in argv:
        return argv[argv.index("--out-dir") + 1]
    return {"train-gan": GANConfig, "train-vae": VAEConfig, "train-classifier": ClassifierConfig}[argv[0]]().out_dir


def test_every_documented_command_runs_as_written(tmp_path, monkeypatch, start_process, inception_weights):
    """In page order (PAGES); a training run starts as soon as the earlier command on its run folder is done, and every
    other command waits for the training runs before it (a dry run: for the one on its run folder only)."""
    monkeypatch.setenv("GENVISION_INCEPTION_WEIGHTS", str(inception_weights))
    commands = documented_commands()
    assert ("README.md", "python train_gan.py") in commands and len(commands) > 20, commands
    assert {page for page, _ in commands} >= {"README.md", "docs/training.md", "docs/evaluation.md"}, commands
    monkeypatch.chdir(tmp_path)  # a fresh clone's root, without its runs/ and with an empty samples/ folder
    (tmp_path / "samples").mkdir()
    training: dict[str, tuple[str, list[str], object]] = {}  # run folder -> (page: command, argv, process)

    def done(folder: str | None = None) -> None:
        for name in [folder] if folder else list(training):
            if name in training:
                command, argv, process = training.pop(name)
                code, _, stderr = wait(process)
                check(command, argv, code, stderr)

    for page, command in commands:
        planned = as_run(command)
        command = f"{page}: {command}"
        if planned is None:
            continue
        argv, trains = planned
        if trains:
            done(out_dir(argv))
            training[out_dir(argv)] = (command, argv, start_process(["-m", "genvision", *argv], cwd=tmp_path))
            continue
        done(out_dir(argv) if "--dry-run" in argv else None)
        check(command, argv, *cli(*argv)[::2])
    done()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(Path(run).name for run in TRAINED)
    assert (tmp_path / "runs" / "dcgan" / "checkpoints" / "step-000004").is_dir()  # the resume continued the run
    assert (tmp_path / "interpolation.png").is_file() and len(list((tmp_path / "pngs").iterdir())) == MAX_PNGS


def check(command: str, argv: list[str], code: int, stderr: str) -> None:
    assert code == 0 and "Traceback" not in stderr, \
        f"command {command!r} (run as genvision {shlex.join(argv)}) exit {code}:\n{stderr[-3000:]}"
