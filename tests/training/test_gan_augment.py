"""`train_gan.py --augment`: DiffAugment on every discriminator input, with a fixed or an adaptive p (ADA).

Tiny runs on a folder of 32 noise images (a discriminator with --d-lr 0.002 overfits them within a few steps):
- the adaptive p rises, in steps of exactly images / (kimg * 1000), when D overfits; it is logged as aug_p and shown
  by the report; a checkpoint written without --augment resumes with it, the augmentation state fresh;
- resume is bit-exact with augmentation on: 6 steps straight == 3 steps + `--resume auto` to 6 (every tensor of the
  checkpoints, the augmentation generator and the adaptive state included, saved mid-interval), for an adaptive p with
  R1 (differentiated through the augmentation) and for a fixed p with WGAN-GP, --d-steps 2 and --conditional;
- two processes under torchrun agree on p (each rank's own, and the logged one) and end with identical weights;
- bad flags are one line, exit 2.
The runs without --augment of the other test files (test_gan_resume.py, test_run_folders.py) check that the default
path is unchanged.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import (TINY_GAN, assert_one_line_error, assert_same_checkpoints, cli, free_port, load_state,
                     logged_losses, metrics_records, noise_images, wait, write_pngs)

PROBE = Path(__file__).resolve().parent / "_dist_probe.py"
COMMON = [*TINY_GAN, "--log-every", "1", "--d-lr", "0.002"]
ADAPTIVE = ["--augment", "color,translation,cutout", "--augment-target", "0.6"]

RESUME_VARIANTS = {
    # interval 2: the step-3 checkpoint lands inside an interval (one D step's sums pending); 2 * 8 / 50 = 0.32 a move
    "adaptive-r1": [*ADAPTIVE, "--augment-kimg", "0.05", "--augment-interval", "2", "--r1-gamma", "1.0",
                    "--dataset", "folder:{digits}"],
    "fixed-wgan-gp-conditional": ["--augment", "translation,cutout", "--augment-p", "0.5", "--loss", "wgan-gp",
                                  "--d-steps", "2", "--conditional", "--dataset", "folder:{classes}", "--seed", "3"],
}
RESUME_FLAGS = ["--checkpoint-every", "3", "--sample-every", "3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from genvision.data import load_dataset

    base = tmp_path_factory.mktemp("gan-augment-data")
    folders = {"digits": base / "digits", "classes": base / "classes"}
    write_pngs(noise_images(32), folders["digits"])
    write_pngs(noise_images(12, seed=1), folders["classes"] / "a")
    write_pngs(noise_images(12, seed=2), folders["classes"] / "b")
    for folder in folders.values():  # decoded once here, not by every process
        load_dataset(f"folder:{folder}", 32, 0)
    return folders


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """(base folder, name -> stdout): every single-process run of this file, in this process (`cli`: the same
    parser and run as train_gan.py, without a second start-up of torch)."""
    base = tmp_path_factory.mktemp("gan-augment")

    def train(out: Path, *argv: str) -> str:
        code, stdout, stderr = cli("train-gan", "--out-dir", out, *COMMON, "--report-to", "none", *argv)
        assert code == 0, f"{out}: exit {code}\n{stderr[-3000:]}"
        assert "Traceback" not in stderr, stderr[-3000:]
        return stdout

    stdout = {}
    plain = ["--dataset", f"folder:{data['digits']}", "--checkpoint-every", "3", "--sample-every", "0"]
    train(base / "rise", *plain, "--num-steps", "3")
    stdout["rise"] = train(base / "rise", *plain, "--num-steps", "24", "--resume", "auto", "--checkpoint-every", "0",
                           *ADAPTIVE, "--augment-kimg", "0.1")  # step-000003 is kept beside the final one
    for name, extra in RESUME_VARIANTS.items():
        argv = [a.format(**data) for a in extra] + RESUME_FLAGS
        train(base / name / "straight", "--num-steps", "6", *argv)
        train(base / name / "resumed", "--num-steps", "3", *argv)
        stdout[name] = train(base / name / "resumed", "--num-steps", "6", "--resume", "auto", *argv)
    return base, stdout


def test_adaptive_p_rises_when_the_discriminator_overfits(runs):
    """3 steps without augmentation, then --augment ... --augment-target 0.6 --augment-kimg 0.1 to step 24: p starts
    at 0 (the checkpoint had no augmentation state), moves by 4 * 8 / 100 = 0.32 per 4-step interval, and rises as D
    grows confident on the 32 real images (r_t = E[sign D(x)] > 0.6)."""
    base, stdout = runs
    run = base / "rise"
    assert "resuming from" in stdout["rise"] and "step-000003 at step 3" in stdout["rise"]
    records = metrics_records(run)
    assert [r["step"] for r in records] == list(range(1, 25))
    assert all("aug_p" not in r for r in records[:3])  # the run without --augment logs no p
    p = [r["aug_p"] for r in records[3:]]
    assert p[:3] == [0.0, 0.0, 0.0]  # fresh: ADA's start, no update before the first interval ends (step 7)
    assert all(round(abs(b - a), 6) == 0.32 or b in (0.0, 1.0) for a, b in zip(p, p[1:]) if b != a)
    assert p[-1] >= 0.64 and max(p) > 0.5 and all(0 <= q <= 1 for q in p)
    without = load_state(run / "checkpoints" / "step-000003")
    assert "augment_noise" not in without and "augment_adaptive" not in without  # the default path saves nothing new
    state = load_state(run / "checkpoints" / "step-000024")
    assert state["augment_noise"].shape[0] == 1 and state["augment_adaptive"]["p"].item() == p[-1]
    page = (run / "report.html").read_text()
    assert "augmentation probability" in page and "adaptive (ADA, target r_t" in page


@pytest.mark.parametrize("name", list(RESUME_VARIANTS))
def test_resume_with_augmentation_is_bit_exact(runs, name):
    base, stdout = runs
    straight, resumed = base / name / "straight", base / name / "resumed"
    assert "resuming from" in stdout[name] and "step-000003 at step 3" in stdout[name]
    a, _, sa, _ = assert_same_checkpoints(straight / "checkpoints" / "step-000006",
                                          resumed / "checkpoints" / "step-000006")
    before = load_state(straight / "checkpoints" / "step-000003")
    assert sa["augment_noise"].shape[0] == 1 and not torch.equal(sa["augment_noise"], before["augment_noise"])
    assert logged_losses(straight) == logged_losses(resumed)
    p = [r["aug_p"] for r in metrics_records(resumed)]
    assert len(p) == 6
    if name == "adaptive-r1":
        assert before["augment_adaptive"]["steps"] == 1 and before["augment_adaptive"]["sums"][1].item() == 8
        assert max(p) > 0  # p moved: the resumed run continued a p that was not at its start
        assert any(r["penalty"] > 0 for r in metrics_records(resumed))
    else:
        assert p == [0.5] * 6 and "augment_adaptive" not in sa
    for png in ("samples/step-000003.png", "samples/step-000006.png", "final.png"):
        assert (straight / png).read_bytes() == (resumed / png).read_bytes(), png


def test_two_processes_agree_on_p(tmp_path, start_process, data):
    """torchrun, 2 processes (gloo), adaptive p: every rank ends with the same p, the same weights, and p moves by
    the images of both ranks (2 ranks * 2 D steps * 8 images / (0.1 * 1000) = 0.32; one rank alone would move 0.16)."""
    probe, run = tmp_path / "probe", tmp_path / "run"
    probe.mkdir()
    code, stdout, stderr = wait(start_process(
        ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1", "--master-port",
         str(free_port()), str(PROBE), str(probe), "--out-dir", str(run), *COMMON, "--num-steps", "12",
         "--sample-every", "0", "--checkpoint-every", "0", "--dataset", f"folder:{data['digits']}", *ADAPTIVE,
         "--augment-kimg", "0.1", "--augment-interval", "2"]))
    assert code == 0, stderr[-4000:]
    infos = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [info["num_processes"] for info in infos] == [2, 2]
    assert infos[0]["aug_p"] == infos[1]["aug_p"]
    final = [load_file(probe / f"rank-rank{r}.safetensors") for r in (0, 1)]
    assert [key for key in final[0] if not torch.equal(final[0][key], final[1][key])] == []
    p = [r["aug_p"] for r in metrics_records(run)]
    assert len(p) == 12 and p[-1] == infos[0]["aug_p"] and max(p) > 0
    moves = [(a, b) for a, b in zip(p, p[1:]) if b != a]
    assert moves and all(round(abs(b - a), 6) == 0.32 or b in (0.0, 1.0) for a, b in moves)
    state = load_state(run / "checkpoints" / "step-000012")
    assert state["augment_noise"].shape[0] == 2 and not torch.equal(*state["augment_noise"])  # own draws per rank
    assert state["augment_adaptive"]["p"].item() == p[-1]


@pytest.mark.parametrize("argv, words", [
    (["--augment", "rotate"], ["--augment", "'rotate'", "color, translation, cutout"]),
    (["--augment", "color,color"], ["--augment", "'color'", "twice"]),
    (["--augment", "color", "--augment-p", "1.5"], ["--augment-p", "[0, 1]", "1.5"]),
    (["--augment", "color", "--augment-target", "1.0"], ["--augment-target", "1.0"]),
    (["--augment", "color", "--augment-kimg", "0"], ["--augment-kimg", "> 0"]),
    (["--augment", "color", "--augment-interval", "0"], ["--augment-interval", "> 0"]),
    (["--augment-target", "0.6"], ["--augment-target", "--augment", "color, translation, cutout"]),
])
def test_bad_augment_flags_are_one_line(tmp_path, argv, words):
    code, _, stderr = cli("train-gan", "--dry-run", "--out-dir", tmp_path / "run", *argv)
    assert_one_line_error(code, stderr, *words)
    assert not (tmp_path / "run").exists()


def test_augment_flags_through_the_python_api_and_dry_run(tmp_path):
    from genvision.config import GANConfig, config_from_keywords
    from genvision.errors import UsageError

    config = config_from_keywords(GANConfig, {"augment": "color,cutout", "augment_target": 0.6},
                                  what="genvision.train_gan()")
    assert (config.augment, config.augment_p, config.augment_target, config.augment_kimg,
            config.augment_interval) == ("color,cutout", 1.0, 0.6, 100.0, 4)
    with pytest.raises(UsageError, match="rotate"):
        config_from_keywords(GANConfig, {"augment": "rotate"}, what="genvision.train_gan()")
    code, stdout, stderr = cli("train-gan", "--dry-run", "--out-dir", tmp_path / "run", "--augment",
                               "translation", "--augment-p", "0.25")
    assert code == 0, stderr
    assert '"augment": "translation"' in stdout and '"augment_p": 0.25' in stdout
