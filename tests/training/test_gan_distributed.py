"""Two processes under torchrun on the CPU (gloo): every rank ends with identical weights, one checkpoint is written.

`_dist_probe.py` runs `train_gan` for 4 steps with `build_state` and `finish` wrapped to save each rank's weights.
Then `train_gan.py` itself runs its last 2 steps under torchrun, resumed from a copy of the probe's step-000002
checkpoint in a new run folder; its step-000004 checkpoint must equal the probe's bit for bit (every rank restores its
own noise generator).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY_GAN, free_port, load_state, load_weights, metrics_records, wait

PROBE = Path(__file__).resolve().parent / "_dist_probe.py"
FLAGS = [*TINY_GAN, "--checkpoint-every", "2", "--log-every", "1", "--sample-every", "0"]
STEPS = 4


@pytest.fixture(scope="module")
def launches(tmp_path_factory, start_process):
    """({"probe": (exit code, stdout, stderr), "script": ...}, probe run folder, probe folder, script run folder)."""
    from genvision.data import load_dataset

    def torchrun(*args: str) -> tuple[int, str, str]:
        return wait(start_process(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
                                   "--master-port", str(free_port()), *args]))

    load_dataset("mnist5k:train", 32, 0)  # decoded once here, not by two processes at once
    base = tmp_path_factory.mktemp("gan-dist")
    (base / "probe").mkdir()
    probe_run, script_run = base / "probe-run", base / "script-run"
    results = {"probe": torchrun(str(PROBE), str(base / "probe"), "--out-dir", str(probe_run), *FLAGS,
                                 "--num-steps", str(STEPS))}
    source = probe_run / "checkpoints" / "step-000002"
    if source.is_dir():
        shutil.copytree(source, script_run / "checkpoints" / "step-000002")
        results["script"] = torchrun("train_gan.py", "--out-dir", str(script_run), *FLAGS, "--num-steps", str(STEPS),
                                     "--resume", "auto")
    return results, probe_run, base / "probe", script_run


def test_probe_ranks_end_identical(launches):
    (code, stdout, stderr), run, probe = launches[0]["probe"], launches[1], launches[2]
    assert code == 0, stderr[-4000:]
    infos = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, info in enumerate(infos):  # really two processes, not two independent single-process runs
        assert info["num_processes"] == 2 and info["process_index"] == rank, info
        assert info["distributed_type"].endswith("MULTI_CPU") and info["step"] == STEPS, info
    assert [info["is_main_process"] for info in infos] == [True, False]

    final = [load_file(probe / f"rank-rank{r}.safetensors") for r in (0, 1)]
    init = [load_file(probe / f"init-rank{r}.safetensors") for r in (0, 1)]
    assert {key.split(".", 1)[0] for key in final[0]} == {"generator", "discriminator", "generator_ema"}
    for before, after in ((init[0], init[1]), (final[0], final[1])):
        assert before.keys() == after.keys()
        different = [key for key in before if not torch.equal(before[key], after[key])]
        assert different == [], different
    for role in ("generator.", "discriminator.", "generator_ema."):  # it trained
        assert any(not torch.equal(init[0][k], final[0][k]) for k in init[0] if k.startswith(role)), role
    bn_means = [k for k in final[0] if k.startswith("discriminator.") and k.endswith("running_mean")]
    assert bn_means and any(not torch.equal(init[0][k], final[0][k]) for k in bn_means)  # buffers were synced too


def test_probe_checkpoint_written_once(launches):
    from genvision.checkpoint import list_checkpoints, read_checkpoint

    (code, stdout, stderr), run, probe = launches[0]["probe"], launches[1], launches[2]
    assert code == 0, stderr[-4000:]
    names = ["step-000002", f"step-{STEPS:06d}"]
    assert [p.name for p in list_checkpoints(run)] == names
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == names  # each once, no temp folders
    checkpoint = read_checkpoint(run / "checkpoints" / f"step-{STEPS:06d}")
    assert checkpoint.step == STEPS
    final = load_file(probe / "rank-rank0.safetensors")
    for role in ("generator", "discriminator", "generator_ema"):
        for key, value in checkpoint.weights(role).items():
            assert torch.equal(value, final[f"{role}.{key}"]), (role, key)
    state = checkpoint.state()
    assert state["world_size"] == 2 and state["step"] == STEPS
    noise = state["noise"]  # every rank's noise generator state, gathered; the ranks draw different latents
    assert noise.shape[0] == 2 and noise.dtype == torch.uint8 and not torch.equal(noise[0], noise[1])
    draws = [torch.randn(4, 8, generator=torch.Generator().set_state(n.clone())) for n in noise]  # see restore()
    assert not torch.equal(draws[0], draws[1])
    assert state["data"] == {"epoch": 0, "position": STEPS}
    assert [r["step"] for r in metrics_records(run)] == list(range(1, STEPS + 1))  # logged by rank 0 only
    assert stdout.count("run folder") == 1 and '"step": %d' % STEPS in stdout


def test_train_gan_script_under_torchrun(launches):
    from genvision.checkpoint import list_checkpoints

    assert "script" in launches[0], "the probe wrote no step-000002 checkpoint to resume from"
    code, stdout, stderr = launches[0]["script"]
    run = launches[3]
    assert code == 0, stderr[-4000:]
    assert "Traceback" not in stderr
    assert stdout.count("resuming from") == 1 and "step-000002 at step 2" in stdout
    assert [line for line in stdout.splitlines() if line.startswith("run folder")] == \
        [f"run folder {run}: FID off (--fid-every 0)"]
    assert (run / "final.png").is_file() and (run / "losses.png").is_file()
    assert json.loads((run / "config.json").read_text())["config"]["num_steps"] == STEPS
    assert [p.name for p in list_checkpoints(run)] == ["step-000002", f"step-{STEPS:06d}"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    steps = [r["step"] for r in metrics_records(run)]
    assert steps == list(range(3, STEPS + 1))  # logged once (by rank 0), from the resumed step on


def test_distributed_resume_is_bit_exact(launches):
    """2 steps + resume to 4 under torchrun == 4 steps straight under torchrun (the probe), every tensor."""
    results, probe_run, _, script_run = launches
    for name in ("probe", "script"):
        assert name in results and results[name][0] == 0, (name, results.get(name, ("",) * 3)[2][-3000:])
    a_dir = probe_run / "checkpoints" / f"step-{STEPS:06d}"
    b_dir = script_run / "checkpoints" / f"step-{STEPS:06d}"
    a, b = load_weights(a_dir), load_weights(b_dir)
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    sa, sb = load_state(a_dir), load_state(b_dir)
    assert sa["world_size"] == sb["world_size"] == 2 and sa["data"] == sb["data"]
    assert torch.equal(sa["noise"], sb["noise"])  # both ranks' noise generators continued exactly
    for key in ("optimizer_g", "optimizer_d"):
        for index, moments in sa[key]["state"].items():
            for name, value in moments.items():
                assert torch.equal(value, sb[key]["state"][index][name]), (key, index, name)
    assert torch.equal(sa["fixed_noise"], sb["fixed_noise"]) and sa["step"] == sb["step"] == STEPS


def test_two_process_conditional_run(tmp_path, start_process):
    """--conditional under torchrun: both ranks end with identical conditional weights (class embeddings of the
    generator's BatchNorms and of the projection discriminator included) and rank 0 records the classes."""
    from genvision.checkpoint import read_checkpoint

    probe, run = tmp_path / "probe", tmp_path / "run"
    probe.mkdir()
    code, stdout, stderr = wait(start_process(
        ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1", "--master-port",
         str(free_port()), str(PROBE), str(probe), "--out-dir", str(run), *FLAGS, "--num-steps", "2",
         "--conditional", "--d-normalization", "spectral"]))
    assert code == 0, stderr[-4000:]
    init = [load_file(probe / f"init-rank{r}.safetensors") for r in (0, 1)]
    final = [load_file(probe / f"rank-rank{r}.safetensors") for r in (0, 1)]
    assert "generator.layers.1.gamma.weight" in final[0] and "discriminator.embed.parametrizations.weight.original" \
        in final[0]
    for a, b in ((init[0], init[1]), (final[0], final[1])):
        assert [key for key in a if not torch.equal(a[key], b[key])] == []
    for key in ("generator.layers.1.gamma.weight", "discriminator.embed.parametrizations.weight.original"):
        assert not torch.equal(init[0][key], final[0][key]), key  # the class embeddings trained
    checkpoint = read_checkpoint(run / "checkpoints" / "step-000002")
    assert checkpoint.class_names == tuple("0123456789") and checkpoint.class_counts == (450,) * 10
    assert checkpoint.state()["world_size"] == 2
