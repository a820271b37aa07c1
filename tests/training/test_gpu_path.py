"""The fast paths of the training step (`genvision.training.performance`), on the CPU and in process.

--channels-last and --compile train the same networks as the default path: the same losses over a few steps (within
float32 rounding), checkpoints written in one mode load and continue in the other, and resuming within a mode is
exact (4 steps straight == 2 steps, checkpoint, a fresh task restored from it, 2 steps). The EMA's multi-tensor
update is bit-identical to the per-tensor loop it replaced, and Adam is fused on CUDA only.

--compile runs here with the `aot_eager` backend (Dynamo's graph capture and AOTAutograd's joint forward/backward
graphs, as inductor gets them, executed with eager kernels): inductor's C++ code generation takes ~50 s for these
tiny networks on a 2-core CPU when its cache is cold. GENVISION_TEST_COMPILE_BACKEND=inductor tests inductor itself.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types

import pytest
import torch
from torch import nn

from helpers import noise_images, write_pngs

from genvision.checkpoint import read_checkpoint, save_checkpoint
from genvision.config import GANConfig, VAEConfig
from genvision.models.dcgan import Generator
from genvision.training import performance
from genvision.training.common import make_accelerator
from genvision.training.gan import GANTask, update_ema
from genvision.training.vae import VAETask

COMPILE_BACKEND = os.environ.get("GENVISION_TEST_COMPILE_BACKEND", "aot_eager")
MODES = {"default": {}, "channels_last": {"channels_last": True}, "compile": {"compile": True}}
TASKS = {"gan": (GANTask, GANConfig), "vae": (VAETask, VAEConfig)}
NETWORKS = {"gan": {"generator": "generator", "discriminator": "discriminator", "generator_ema": "generator_ema"},
            "vae": {"vae": "model"}}  # checkpoint role -> task attribute; the first is the one inspected
FIRST_ROLE = {kind: next(iter(roles)) for kind, roles in NETWORKS.items()}
STEPS = 4  # straight; resumed runs stop and restart half-way

# Losses of another mode: NHWC convolutions (oneDNN) and compiled graphs sum in other orders, so each op may round
# differently in float32 (~1e-7 relative); over 4 steps the losses measured here differ by <= 6e-7 relative (0 with
# aot_eager, ~2e-7 with inductor). rtol 1e-4 leaves room for other CPUs' kernels and is far below what a real fault
# does (a batch in the wrong layout or a network the optimizer does not update moves the losses by > 1e-2).
LOSS_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def tiny_config(kind: str, dataset: str, **fields):
    """A tiny run on `dataset`: 32 px, 3 channels (so NCHW and NHWC batches differ), base width 8, batch 8, no FID."""
    shared = dict(dataset=dataset, resolution=32, channels=3, base_channels=8, latent_dim=8, batch_size=8,
                  num_grid_images=4, fid_every=0, report_to="none", seed=3)
    if kind == "vae":  # the mixture prior every VAE checkpoint stores, fitted on a few images
        shared.update(prior_components=2, prior_fit_images=64)
    config = TASKS[kind][1](**{**shared, **fields})
    config.validate()
    return config


class CountingBackend:
    """A torch.compile backend that hands graphs to COMPILE_BACKEND and counts the calls of what it compiled."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, graph_module, example_inputs):
        compiled = torch._dynamo.lookup_backend(COMPILE_BACKEND)(graph_module, example_inputs)

        def run(*args):
            self.calls += 1
            return compiled(*args)

        return run


@pytest.fixture(scope="module")
def backend():
    """torch.compile with the counting backend for this module's tests."""
    counting, original = CountingBackend(), torch.compile
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", lambda module, **options: original(module, backend=counting, **options))
        yield counting


@pytest.fixture(scope="module")
def accelerator():
    return make_accelerator("no")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """24 random colour PNGs: 3 batches an epoch, so 4 steps cross an epoch boundary (the resume point is one)."""
    folder = tmp_path_factory.mktemp("colour-noise")
    write_pngs(noise_images(24, channels=3), folder)
    return f"folder:{folder}"


def train(task, steps: int) -> list[dict[str, torch.Tensor]]:
    """The stats of `steps` training steps."""
    return [{key: value.clone() for key, value in task.train_step().items()} for _ in range(steps)]


def snapshot(task) -> dict:
    """Copies of every network's state_dict and every optimizer's state, as a checkpoint would hold them."""
    weights, state = task.state_payload()
    weights.pop("prior", None)  # the VAE's mixture: fitted by scikit-learn, not by the step under test
    optimizers = copy.deepcopy({key: value for key, value in state.items() if key.startswith("optimizer")})
    return {"weights": {role: {k: v.clone() for k, v in d.items()} for role, d in weights.items()},
            "optimizers": optimizers}


def save(task, folder):
    """Commit the task's checkpoint into `folder` as the training loop does; returns it opened."""
    weights, state = task.state_payload()
    meta = {"kind": task.kind, "step": task.step, "config": dataclasses.asdict(task.config)}
    return read_checkpoint(save_checkpoint(folder, meta, weights, state))


@pytest.fixture(scope="module")
def runs(backend, accelerator, dataset, tmp_path_factory):
    """runs(kind, mode) -> dict of that mode's runs (computed once): `straight` (4 steps), `checkpoint` (after 2),
    `resumed` (2 more steps of a fresh task of the same mode restored from it; not for the default mode) and
    `continued-MODE` (2 more steps of a fresh task of the default mode restored from it; for the default mode
    itself, of each other mode)."""
    cache: dict = {}

    def make(kind: str, mode: str, **fields):
        task_class, _ = TASKS[kind]
        return task_class(tiny_config(kind, dataset, **MODES[mode], **fields), accelerator)

    def get(kind: str, mode: str) -> dict:
        if (kind, mode) in cache:
            return cache[kind, mode]
        straight, calls_before = make(kind, mode), backend.calls
        run = {"straight_losses": train(straight, STEPS), "straight": snapshot(straight), "task": straight,
               "compiled_calls": backend.calls - calls_before}
        half = make(kind, mode)
        train(half, STEPS // 2)
        run["checkpoint"] = save(half, tmp_path_factory.mktemp(f"{kind}-{mode}") / "step-000002")
        targets = ([(f"continued-{m}", m) for m in MODES if m != "default"] if mode == "default" else
                   [("resumed", mode), ("continued-default", "default")])
        for name, target in targets:
            task = make(kind, target)
            assert task.restore(run["checkpoint"]) == STEPS // 2
            run[name] = {"losses": train(task, STEPS - STEPS // 2), "snapshot": snapshot(task), "task": task}
        cache[kind, mode] = run
        return run

    return get


FAST_MODES = [(kind, mode) for kind in TASKS for mode in ("channels_last", "compile")]


@pytest.mark.parametrize(("kind", "mode"), FAST_MODES)
def test_same_losses_as_the_default_path(runs, kind, mode):
    default, other = runs(kind, "default"), runs(kind, mode)
    torch.testing.assert_close(other["straight_losses"], default["straight_losses"], **LOSS_TOLERANCE)
    # the weights too, to within one Adam step (lr): a sign of a near-zero gradient flipped by rounding moves a
    # weight by up to 2 lr, which would show in the losses long before
    lr = other["task"].config.lr
    torch.testing.assert_close(other["straight"]["weights"], default["straight"]["weights"], rtol=0, atol=lr)
    role = FIRST_ROLE[kind]
    trained, at_step_2 = default["straight"]["weights"][role], default["checkpoint"].weights(role)
    assert any(not torch.equal(trained[key], at_step_2[key]) for key in trained)  # it did train on
    task = other["task"]
    network = getattr(task, NETWORKS[kind][role])
    assert default["compiled_calls"] == 0
    if mode == "channels_last":
        convs = [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        one_by_one = [m for m in convs if getattr(m, "one_by_one_input", False)]
        assert len(one_by_one) == 1  # the generator's first layer; the VAE decoder's
        assert all(m.weight.is_contiguous() for m in one_by_one)  # kept NCHW (performance.place)
        first_conv = next(m for m in convs if m not in one_by_one)
        assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not first_conv.weight.is_contiguous()
        # the image batches reach the networks in NHWC too (one more step of the finished run)
        image_network = task.discriminator if kind == "gan" else task.model
        layouts = []
        hook = image_network.register_forward_pre_hook(
            lambda module, inputs: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last)
                                                  and not inputs[0].is_contiguous()))
        try:
            task.train_step()
        finally:
            hook.remove()
        assert layouts and all(layouts)
    else:  # the step ran through compiled graphs that share the modules' parameters
        assert other["compiled_calls"] >= STEPS
        step_network = task.generator_fn if kind == "gan" else task.model_fn
        assert isinstance(step_network, torch._dynamo.eval_frame.OptimizedModule)
        assert step_network._orig_mod is network


@pytest.mark.parametrize(("kind", "mode"), FAST_MODES)
def test_resume_is_exact_within_a_mode(runs, kind, mode):
    run = runs(kind, mode)
    resumed = run["resumed"]
    exact = {"rtol": 0, "atol": 0}
    torch.testing.assert_close(resumed["losses"], run["straight_losses"][STEPS // 2:], **exact)
    torch.testing.assert_close(resumed["snapshot"], run["straight"], **exact)


@pytest.mark.parametrize(("kind", "mode"), FAST_MODES)
def test_a_checkpoint_continues_in_the_other_mode(runs, kind, mode):
    default, other = runs(kind, "default"), runs(kind, mode)
    # both checkpoints hold the same NCHW tensors under the same keys (no `_orig_mod.` of compiled wrappers)
    for role, attribute in NETWORKS[kind].items():
        a, b = default["checkpoint"].weights(role), other["checkpoint"].weights(role)
        assert sorted(a) == sorted(b) == sorted(getattr(default["task"], attribute).state_dict())
        assert all(tensor.is_contiguous() for tensor in b.values())
        torch.testing.assert_close(b, a, rtol=0, atol=other["task"].config.lr)
    for key, optimizer in other["checkpoint"].state().items():
        if key.startswith("optimizer"):
            assert all(value.is_contiguous() for entry in optimizer["state"].values() for value in entry.values())
    # written in `mode`, continued in the default mode (and the other way round): loaded exactly, in the loading
    # mode's layout, and it trains on as a run of the writing mode does
    for writer, reader, reader_mode in ((other, other["continued-default"], "default"),
                                        (default, default[f"continued-{mode}"], mode)):
        torch.testing.assert_close(reader["losses"], writer["straight_losses"][STEPS // 2:], **LOSS_TOLERANCE)
        network = getattr(reader["task"], NETWORKS[kind][FIRST_ROLE[kind]])
        weight = next(m.weight for m in network.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
                      and not getattr(m, "one_by_one_input", False))
        assert weight.is_contiguous(memory_format=torch.channels_last) == (reader_mode == "channels_last")


@pytest.mark.parametrize("penalty", [{"r1_gamma": 1.0}, {"loss": "wgan-gp", "d_normalization": "none"}])
def test_compiled_step_with_a_gradient_penalty(backend, accelerator, dataset, penalty):
    """Penalties differentiate D's input gradient; compiled graphs have no double backward, so those D passes run
    eagerly (with R1 the whole D update), and the step still matches the default one."""
    losses = {}
    for mode in ("default", "compile"):
        losses[mode] = train(GANTask(tiny_config("gan", dataset, **penalty, **MODES[mode]), accelerator), 2)
    assert all(step["penalty"] > 0 for step in losses["compile"])
    torch.testing.assert_close(losses["compile"], losses["default"], **LOSS_TOLERANCE)


# --- units -----------------------------------------------------------------------------------------------------


@torch.no_grad()
def update_ema_loop(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """The per-tensor EMA update that `gan.update_ema` replaced (genvision 0.2.0)."""
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


@pytest.mark.parametrize("channels_last", [False, True])
def test_foreach_ema_is_bit_identical_to_the_per_tensor_loop(channels_last):
    torch.manual_seed(0)
    model = performance.place(Generator(8, 8, 3, 32), torch.device("cpu"), channels_last)
    ema_foreach, ema_loop = copy.deepcopy(model), copy.deepcopy(model)  # as GANTask makes its EMA
    for step, decay in enumerate([0.1, 0.55, 0.9, 0.999, 0.999]):
        with torch.no_grad():  # the model moves on: new weights and BatchNorm statistics
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.add_(torch.randn(tensor.shape).to(tensor.dtype) if tensor.is_floating_point() else 1)
        update_ema(ema_foreach, model, decay)
        update_ema_loop(ema_loop, model, decay)
        torch.testing.assert_close(ema_foreach.state_dict(), ema_loop.state_dict(), rtol=0, atol=0)
    assert int(ema_foreach.layers[1].num_batches_tracked) == 5  # integer buffers are copied too


def test_adam_is_fused_on_cuda_only():
    parameters = [nn.Parameter(torch.zeros(3))]
    assert not performance.adam(parameters, torch.device("cpu"), lr=1e-3).defaults["fused"]
    fused = performance.adam(parameters, torch.device("cuda"), lr=1e-3, betas=(0.5, 0.999))
    assert fused.defaults["fused"] is True and fused.defaults["betas"] == (0.5, 0.999)


def test_loss_scale_is_the_grad_scalers_scale_under_fp16_else_one():
    assert performance.loss_scale(types.SimpleNamespace(scaler=None)) == 1.0
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    assert performance.loss_scale(types.SimpleNamespace(scaler=scaler)) == 256.0  # before its first scale()
    scaler.scale(torch.ones(()))
    scale = performance.loss_scale(types.SimpleNamespace(scaler=scaler))
    assert torch.is_tensor(scale)
    torch.testing.assert_close(scale, torch.tensor(256.0))
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    assert performance.loss_scale(types.SimpleNamespace(scaler=disabled)) == 1.0


def test_optimizer_states_are_saved_contiguous_and_restored_in_the_parameters_layout():
    weight = nn.Parameter(torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last))
    optimizer = torch.optim.Adam([weight])
    weight.grad = torch.randn(weight.shape).contiguous(memory_format=torch.channels_last)
    optimizer.step()
    saved = performance.contiguous_state(optimizer.state_dict())
    moments = {key: optimizer.state[weight][key].clone() for key in ("exp_avg", "exp_avg_sq")}
    assert all(saved["state"][0][key].is_contiguous() for key in moments)
    restored = torch.optim.Adam([weight])
    performance.load_optimizer_state(restored, saved)
    for key, value in moments.items():
        assert restored.state[weight][key].stride() == weight.stride()
        torch.testing.assert_close(restored.state[weight][key], value, rtol=0, atol=0)
