"""The fast paths of the training step: memory format, torch.compile, fused Adam, and the fp16 loss scale.

`--channels-last` puts the networks and the batches fed to them in NHWC (`torch.channels_last`), the layout tensor
cores and oneDNN convolve fastest. `--compile` wraps the networks the step calls in `torch.compile`; the modules
themselves (whose parameters the compiled wrappers share) are what the EMA, samplers and checkpoints use, so
state_dict keys never carry `_orig_mod.` and checkpoints are interchangeable between modes. Checkpoint weights are
written contiguous (NCHW) by `genvision.checkpoint.save_checkpoint`; optimizer states are made contiguous here
before they are saved (`contiguous_state`) and put back into their parameter's layout when loaded
(`load_optimizer_state`), so a checkpoint holds the same tensors whatever the mode it was written in.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def memory_format(channels_last: bool) -> torch.memory_format:
    """torch.channels_last (NHWC) for --channels-last, else the usual NCHW."""
    return torch.channels_last if channels_last else torch.contiguous_format


def to_layout(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A (N, C, H, W) batch in the layout of the networks (a no-op without --channels-last)."""
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def place(module: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """`module` moved to `device`, its 4-d weights in NHWC with --channels-last (others are unaffected), except the
    weights of layers marked `one_by_one_input` (the generator's first layer, whose (N, C, 1, 1) input is NCHW and
    NHWC at once): they stay NCHW. With an NHWC weight there, torch 2.11's inductor (CUDA) predicted NHWC strides
    for the weight's gradient, cuDNN returned NCHW, and --compile --channels-last steps at base width 64 failed
    (`assert_size_stride` in `convolution_backward`, the first GPU check, H200); with it NCHW, they ran."""
    module = module.to(device=device, memory_format=memory_format(channels_last))
    if channels_last:
        for layer in module.modules():
            if getattr(layer, "one_by_one_input", False):
                layer.weight.data = layer.weight.data.contiguous()
    return module


def compiled(module: nn.Module, enabled: bool) -> Callable:
    """`torch.compile(module)` with --compile (it shares the module's parameters and buffers), else the module."""
    return torch.compile(module) if enabled else module


def adam(parameters, device: torch.device, **options) -> torch.optim.Adam:
    """Adam; on CUDA the fused kernel (one launch for every parameter), elsewhere PyTorch's default
    implementation, so CPU results do not change."""
    if device.type == "cuda":
        options["fused"] = True
    return torch.optim.Adam(parameters, **options)


def contiguous_state(optimizer_state: dict) -> dict:
    """An optimizer state_dict with every tensor contiguous (NCHW), as checkpoints hold them in every mode."""
    state = {index: {key: value.contiguous() if torch.is_tensor(value) else value for key, value in entry.items()}
             for index, entry in optimizer_state["state"].items()}
    return {**optimizer_state, "state": state}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a saved optimizer state_dict, then put each per-parameter state tensor (Adam's moments) into its
    parameter's memory format, so a resumed --channels-last run updates exactly the tensors of one that never
    stopped."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            entry = optimizer.state.get(parameter, {})
            for key, value in entry.items():
                if torch.is_tensor(value) and value.shape == parameter.shape and value.stride() != parameter.stride():
                    entry[key] = torch.empty_like(parameter, dtype=value.dtype).copy_(value)


def loss_scale(accelerator) -> float | torch.Tensor:
    """The grad scaler's current scale S with fp16 (a device tensor, read without a host sync), else 1.0."""
    scaler = accelerator.scaler
    if scaler is None or not scaler.is_enabled():
        return 1.0
    # `_scale` is None until the scaler's first `scale()` call; `get_scale()` then reports its initial scale.
    return scaler._scale if scaler._scale is not None else scaler.get_scale()
