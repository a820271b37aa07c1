"""Unit maths of the GAN training step: EMA update and its warm-up."""

import torch
from torch import nn

from genvision.training.gan import ema_decay_at, update_ema


def test_update_ema_is_a_lerp_of_parameters_and_copies_buffers():
    model, ema = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        ema.weight.copy_(torch.tensor([0.0, 0.0, 0.0]))
        model.running_mean.copy_(torch.tensor([5.0, 6.0, 7.0]))
    update_ema(ema, model, decay=0.75)
    torch.testing.assert_close(ema.weight, torch.tensor([0.25, 0.5, 0.75]))  # 0.75 * 0 + 0.25 * w
    torch.testing.assert_close(ema.running_mean, model.running_mean)


def test_ema_warmup_ramps_to_the_configured_decay():
    assert ema_decay_at(0, 0.999) == 0.1  # (1 + 0) / (10 + 0)
    assert ema_decay_at(10, 0.999) == 11 / 20
    assert ema_decay_at(10_000, 0.999) == 0.999
    assert ema_decay_at(5, 0.2) == 0.2
