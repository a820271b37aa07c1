"""Device handling that a GPU machine needs and the CPU can show: resuming a noise state saved on another kind of
device, --mixed-precision auto deferring to Accelerate's environment, and `genvision sample --device`."""

import json
from types import SimpleNamespace

import pytest
import torch

from genvision.training.common import restore_generator_state
from helpers import TINY_GAN, cli, run_python, subprocess_env


def test_noise_state_of_another_device_is_reseeded_not_an_error():
    """A CUDA generator state is 16 bytes, a CPU one 5056: a checkpoint from the other device reseeds per rank."""
    accelerator = SimpleNamespace(num_processes=2, process_index=1)
    cuda_like = torch.arange(32, dtype=torch.uint8).reshape(2, 16)  # what two CUDA ranks would have saved
    noise = torch.Generator().manual_seed(0)
    restore_generator_state(noise, cuda_like, 10, accelerator)
    expected = torch.Generator().manual_seed(int(cuda_like[0].sum()) + 10 + 1)
    torch.testing.assert_close(torch.randn(4, generator=noise), torch.randn(4, generator=expected))
    saved = torch.stack([torch.Generator().manual_seed(s).get_state() for s in (5, 6)])  # same device: exact
    restore_generator_state(noise, saved, 10, accelerator)
    torch.testing.assert_close(torch.randn(4, generator=noise), torch.randn(4, generator=torch.Generator().manual_seed(6)))


PROBE = ("from genvision.training.common import make_accelerator; import sys; "
         "print(make_accelerator(sys.argv[1]).mixed_precision)")


@pytest.mark.parametrize("flag, env, expected", [("auto", "bf16", "bf16"), ("no", "bf16", "no")])
def test_mixed_precision_auto_defers_to_accelerate_env(flag, env, expected):
    variables = {"CUDA_VISIBLE_DEVICES": ""}
    if env:
        variables["ACCELERATE_MIXED_PRECISION"] = env
    environment = subprocess_env(**variables)
    if not env:
        environment.pop("ACCELERATE_MIXED_PRECISION", None)
    proc = run_python(["-c", PROBE, flag], env=environment)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == expected


def test_resolved_precision_is_saved_and_sample_takes_a_device(tmp_path):
    run = tmp_path / "run"
    proc = run_python(["train_gan.py", "--out-dir", str(run), *TINY_GAN, "--num-steps", "1", "--sample-every", "0",
                       "--report-to", "none"],
                      env=subprocess_env(CUDA_VISIBLE_DEVICES="", ACCELERATE_MIXED_PRECISION="bf16"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "config.json").read_text())["config"]["mixed_precision"] == "bf16"
    code, stdout, _ = cli("sample", run, "--num", "4", "--grid", tmp_path / "a.png", "--device", "cpu")
    assert code == 0 and (tmp_path / "a.png").is_file(), stdout
    if not torch.cuda.is_available():
        code, _, stderr = cli("sample", run, "--num", "4", "--grid", tmp_path / "b.png", "--device", "cuda")
        assert code == 2 and "--device cuda: no CUDA device is available" in stderr
        assert not (tmp_path / "b.png").exists()
