"""imageconv: the uint8 <-> [-1, 1] mapping is exact, clamps, and rounds to nearest."""

import pytest
import torch

from genvision.imageconv import to_model_range, to_uint8


def test_endpoints_and_midpoint():
    values = to_model_range(torch.tensor([0, 255, 51], dtype=torch.uint8))
    assert values.dtype == torch.float32
    torch.testing.assert_close(values, torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))
    assert to_uint8(torch.tensor([0.0])).item() == 128  # 127.5 exactly: the one exact half, rounds to 128


def test_round_trip_is_exact_for_all_256_values():
    every = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    model = to_model_range(every)
    assert model.min().item() == -1.0 and model.max().item() == 1.0
    back = to_uint8(model)
    assert back.dtype == torch.uint8 and back.shape == every.shape
    assert torch.equal(back, every)
    assert torch.equal(to_uint8(to_model_range(every, torch.float64)), every)
    assert torch.equal(to_uint8(to_model_range(every, torch.bfloat16)).long().sub(every.long()).abs().le(1),
                       torch.ones_like(every, dtype=torch.bool))


def test_rounds_to_nearest_within_half_a_step():
    every = torch.arange(256, dtype=torch.uint8)
    step = 1 / 127.5  # one uint8 level in model units
    for offset in (0.45, -0.45, 0.2, -0.2):
        assert torch.equal(to_uint8(to_model_range(every) + offset * step).clamp(0, 255), every)
    # a bit more than half a step moves to the next level (except where clamped)
    up = to_uint8(to_model_range(every) + 0.55 * step)
    assert torch.equal(up[:-1], every[:-1] + 1) and up[-1].item() == 255
    down = to_uint8(to_model_range(every) - 0.55 * step)
    assert torch.equal(down[1:], every[1:] - 1) and down[0].item() == 0


def test_clamps_out_of_range_and_non_finite_inputs_stay_in_uint8():
    values = torch.tensor([-5.0, -1.2, 1.2, 7.0, float("inf"), float("-inf")])
    assert to_uint8(values).tolist() == [0, 0, 255, 255, 255, 0]


def test_accepts_gradients_and_half_precision():
    x = torch.zeros(2, 3, requires_grad=True)
    assert to_uint8(x * 1).tolist() == [[128] * 3] * 2
    assert to_uint8(torch.ones(2, dtype=torch.float16)).tolist() == [255, 255]


def test_to_model_range_rejects_float_input_and_does_not_modify_input():
    with pytest.raises(TypeError, match="uint8"):
        to_model_range(torch.zeros(3))
    images = torch.tensor([0, 128, 255], dtype=torch.uint8)
    to_model_range(images)
    assert images.tolist() == [0, 128, 255]


def test_28px_digits_are_padded_with_black_to_32px_for_targets_of_32px_and_more():
    from genvision.imageconv import pad_digits, padded_side, pads_digits

    digits = torch.randint(1, 256, (2, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for target in (32, 64, 299):
        padded = pad_digits(digits, target)
        assert padded.shape == (2, 3, 32, 32) and padded.dtype == torch.uint8
        assert torch.equal(padded[..., 2:30, 2:30], digits)
        border = padded.clone()
        border[..., 2:30, 2:30] = 0
        assert not border.any()  # 2 px of black on every side
        assert pads_digits(28, 28, target) and padded_side(28, 28, target) == 32
    assert torch.equal(pad_digits(digits[0, 0], 32), pad_digits(digits, 32)[0, 0])  # any leading dimensions
    # a smaller target, another size or a non-square image is left as it is
    for images, target in ((digits, 28), (digits, 16), (digits[..., :27, :27], 32), (digits[..., :27], 32)):
        assert pad_digits(images, target) is images
    assert not pads_digits(28, 27, 32) and padded_side(40, 36, 299) == 36
