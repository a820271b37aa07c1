"""genvision.augment: DiffAugment's ops and ADA's probability.

The ops keep shapes and dtypes, keep [-1, 1] (translation, cutout) or their stated bound (colour), match a plain loop
over the pixels (translation, cutout), are differentiable (gradcheck in float64; cutout's and translation's gradients
are their masks), are the identity at p = 0 bit for bit, apply to every image at p = 1, draw the same random stream
whatever p is, and are deterministic for a seed. The adaptive p moves by exactly images / (kimg * 1000) per interval
in the direction of sign(r_t - target), clipped to [0, 1], counts every rank's images, and resumes exactly.
"""

import pytest
import torch

from genvision.augment import (CUTOUT_RATIO, OPS, POLICIES, TRANSLATION_RATIO, AdaptiveProbability, augment, color,
                               cutout, parse_policy, translation)
from genvision.errors import UsageError

ALL = ("color", "translation", "cutout")


def images(n: int = 6, channels: int = 3, side: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """(n, channels, side, side) uniform in [-1, 1]."""
    return (torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1).to(dtype)


def extremes(n: int = 64, channels: int = 3, side: int = 16) -> torch.Tensor:
    """Pixels of -1 and 1 only: the images that push colour's bound furthest."""
    return torch.randint(0, 2, (n, channels, side, side), generator=torch.Generator().manual_seed(1)).float() * 2 - 1


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# --augment's policy names


def test_parse_policy():
    assert POLICIES == ALL
    assert parse_policy("") == () and parse_policy("  ") == ()
    assert parse_policy("color") == ("color",)
    assert parse_policy("translation, cutout") == ("translation", "cutout")
    assert parse_policy("cutout,color") == ("cutout", "color")  # applied in the order given


@pytest.mark.parametrize("text, words", [
    ("rotate", ["'rotate'", "color, translation, cutout"]),
    ("color,rotate", ["'rotate'", "color, translation, cutout"]),
    ("color,", ["''", "color, translation, cutout"]),
    ("color,color", ["'color'", "twice"]),
])
def test_bad_policy_is_one_line_naming_it(text, words):
    with pytest.raises(UsageError) as error:
        parse_policy(text)
    message = str(error.value)
    assert "\n" not in message and message.startswith("--augment")
    for word in words:
        assert word in message, (word, message)


# ---------------------------------------------------------------------------------------------------------------
# The ops


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("side", [8, 16, 32])
@pytest.mark.parametrize("name", ALL)
def test_ops_keep_shape_and_dtype(name, side, channels):
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = images(5, channels, side, dtype=dtype)
        y = OPS[name](x, seeded())
        assert y.shape == x.shape and y.dtype == dtype
    y = augment(images(5, channels, side), ALL, 0.5, seeded())
    assert y.shape == (5, channels, side, side) and y.dtype == torch.float32


@pytest.mark.parametrize("name", ["translation", "cutout"])
def test_translation_and_cutout_keep_the_range(name):
    x = extremes()
    y = OPS[name](x, seeded())
    assert y.min() >= -1 and y.max() <= 1
    assert set(y.unique().tolist()) == {-1.0, 0.0, 1.0}  # input pixels, or the fill 0


@pytest.mark.parametrize("channels, bound", [(3, 9.0), (1, 3.0)])
def test_color_stays_within_its_stated_bound(channels, bound):
    """[-1, 1] -> brightness [-1.5, 1.5] -> saturation [-4.5, 4.5] -> contrast [-9, 9]; one channel skips saturation."""
    x = extremes(256, channels)
    y = color(x, seeded())
    assert y.abs().max() <= bound
    assert y.abs().max() > 1.5  # it does leave [-1, 1]


def test_color_matches_its_equations():
    """Brightness, saturation, contrast in turn, each drawing one uniform for every image."""
    x = images(4, 3, 8)
    b, s, c = (draws.view(4, 1, 1, 1) for draws in torch.rand(3, 4, generator=seeded(5)))
    bright = x + (b - 0.5)
    saturated = (bright - bright.mean(1, keepdim=True)) * (s * 2) + bright.mean(1, keepdim=True)
    mean = saturated.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(color(x, seeded(5)), (saturated - mean) * (c + 0.5) + mean, rtol=0, atol=1e-6)


def test_saturation_is_a_no_op_for_one_channel():
    """One channel: colour is brightness then contrast only."""
    x = images(4, 1, 8)
    per_op = torch.rand(3, 4, generator=seeded(2))
    b, c = per_op[0].view(4, 1, 1, 1), per_op[2].view(4, 1, 1, 1)
    bright = x + (b - 0.5)
    expected = (bright - bright.mean((1, 2, 3), keepdim=True)) * (c + 0.5) + bright.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(color(x, seeded(2)), expected, rtol=0, atol=1e-6)


def test_translation_matches_a_loop_over_pixels():
    """Output (i, j) = input (i + dy, j + dx), 0 outside; shifts uniform in [-S, S], S = round(side / 8)."""
    x = images(8, 2, 16)
    generator = seeded(3)
    shift = int(16 * TRANSLATION_RATIO + 0.5)
    dy = torch.randint(-shift, shift + 1, (8, 1), generator=generator)
    dx = torch.randint(-shift, shift + 1, (8, 1), generator=generator)
    expected = torch.zeros_like(x)
    for n in range(8):
        for i in range(16):
            for j in range(16):
                a, b = i + int(dy[n]), j + int(dx[n])
                if 0 <= a < 16 and 0 <= b < 16:
                    expected[n, :, i, j] = x[n, :, a, b]
    assert torch.equal(translation(x, seeded(3)), expected)
    assert dy.abs().max() == shift and len(set(dy.flatten().tolist())) > 1  # this seed shifts, differently per image


def test_cutout_matches_a_loop_over_pixels():
    """A K x K square (K = side / 2) of 0, its top-left corner at centre - K // 2, centres uniform over the image."""
    x = images(8, 2, 16)
    generator = seeded(4)
    size = int(16 * CUTOUT_RATIO + 0.5)
    centre_y = torch.randint(0, 16 + 1 - size % 2, (8, 1), generator=generator)
    centre_x = torch.randint(0, 16 + 1 - size % 2, (8, 1), generator=generator)
    expected = x.clone()
    for n in range(8):
        top, left = int(centre_y[n]) - size // 2, int(centre_x[n]) - size // 2
        expected[n, :, max(top, 0):max(top + size, 0), max(left, 0):max(left + size, 0)] = 0
    assert torch.equal(cutout(x, seeded(4)), expected)
    cut = (cutout(torch.ones(64, 1, 16, 16), seeded(9)) == 0).flatten(1).sum(1)
    assert cut.max() == size * size and cut.min() < size * size  # whole squares, and squares crossing the border


# ---------------------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("policy", [("color",), ("translation",), ("cutout",), ALL])
@pytest.mark.parametrize("channels", [1, 3])
def test_gradcheck(policy, channels):
    """Autograd against finite differences in float64, the random parameters fixed (the same seed every call); at
    p = 1 and at p = 0.5 (some images augmented, some not)."""
    x = images(3, channels, 8, dtype=torch.float64).requires_grad_(True)
    for p in (1.0, 0.5):
        assert torch.autograd.gradcheck(lambda t: augment(t, policy, p, seeded(7)), (x,))


def test_cutout_and_translation_gradients_are_their_masks():
    """d sum(out * w) / d x: cutout's is w with the square zeroed (the op applied to w itself); translation's is the
    adjoint of the shift, <T x, w> = <x, grad> for the linear map T, and each input pixel is read once if it stays
    in the frame, else never."""
    x = images(4, 3, 16).requires_grad_(True)
    w = images(4, 3, 16, seed=1)
    (cutout(x, seeded(2)) * w).sum().backward()
    assert torch.equal(x.grad, cutout(w, seeded(2)))
    x.grad = None
    (translation(x, seeded(2)) * w).sum().backward()
    probe = images(4, 3, 16, seed=2)
    torch.testing.assert_close((translation(probe, seeded(2)) * w).sum(), (probe * x.grad).sum())
    ones = torch.ones(4, 3, 16, 16, requires_grad=True)
    translation(ones, seeded(2)).sum().backward()
    assert set(ones.grad.unique().tolist()) == {0.0, 1.0}
    assert ones.grad.sum() == (translation(torch.ones(4, 3, 16, 16), seeded(2)) != 0).sum()


def test_gradient_flows_to_every_image_through_the_policy():
    x = images(8, 3, 16).requires_grad_(True)
    augment(x, ALL, 0.5, seeded()).square().sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.flatten(1).abs().sum(1) > 0).all()


# ---------------------------------------------------------------------------------------------------------------
# Probability, determinism


def test_identity_at_p_zero():
    x = images(16, 3, 16)
    for p in (0.0, torch.tensor(0.0), torch.tensor(0.0, dtype=torch.float64)):
        assert torch.equal(augment(x, ALL, p, seeded()), x)
    half = images(16, 3, 16, dtype=torch.bfloat16)
    assert torch.equal(augment(half, ALL, 0.0, seeded()), half)


@pytest.mark.parametrize("name", ALL)
def test_p_one_applies_the_op_to_every_image(name):
    x = images(16, 3, 16)
    assert torch.equal(augment(x, (name,), 1.0, seeded(3)), OPS[name](x, seeded(3)))
    if name == "color":
        assert (augment(x, (name,), 1.0, seeded(3)) != x).flatten(1).all(1).all()


def test_p_half_augments_some_images_and_keeps_the_others():
    x = images(64, 3, 16)
    y = augment(x, ("color",), 0.5, seeded(3))
    op = color(x, seeded(3))
    kept = (y == x).flatten(1).all(1)
    augmented = (y == op).flatten(1).all(1)
    assert (kept ^ augmented).all()  # each image is one or the other
    assert 16 < int(augmented.sum()) < 48


def test_random_stream_does_not_depend_on_p():
    """Every draw is made whatever p is: the generator ends in the same state, so later steps draw the same."""
    x = images(8, 3, 16)
    states = []
    for p in (0.0, 0.3, 1.0, torch.tensor(0.7)):
        generator = seeded(11)
        augment(x, ALL, p, generator)
        states.append(generator.get_state())
    assert all(torch.equal(states[0], state) for state in states[1:])


def test_deterministic_for_a_seed():
    x = images(8, 3, 16)
    for p in (0.5, 1.0):
        assert torch.equal(augment(x, ALL, p, seeded(1)), augment(x, ALL, p, seeded(1)))
        assert not torch.equal(augment(x, ALL, p, seeded(1)), augment(x, ALL, p, seeded(2)))


def test_successive_calls_draw_afresh():
    x = images(8, 3, 16)
    generator = seeded(1)
    assert not torch.equal(augment(x, ALL, 1.0, generator), augment(x, ALL, 1.0, generator))


def test_same_draws_under_bfloat16():
    """Uniforms are drawn in float32 whatever the images' dtype: a bfloat16 batch (autocast) is augmented like its
    float32 copy, up to bfloat16 rounding."""
    x = images(8, 3, 16)
    torch.testing.assert_close(augment(x.bfloat16(), ALL, 1.0, seeded(1)).float(), augment(x, ALL, 1.0, seeded(1)),
                               rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------------------------------------------------
# The adaptive probability (ADA)


def positive(n: int = 8) -> torch.Tensor:
    return torch.full((n, 1), 2.5)


def test_adaptive_p_rises_by_images_over_kimg_on_an_overfitting_discriminator():
    """Every real logit positive: r_t = 1 > 0.6, so every 4 D steps p rises by 4 * 8 / (0.1 * 1000) = 0.32."""
    controller = AdaptiveProbability(target=0.6, kimg=0.1, interval=4)
    assert controller.p.item() == 0.0  # ADA starts at 0
    seen = []
    for _ in range(16):
        controller.observe(positive())
        seen.append(controller.p.item())
    step = 4 * 8 / 100
    assert seen[:3] == [0.0] * 3  # no update inside an interval
    assert seen[3] == pytest.approx(step) and seen[7] == pytest.approx(2 * step) and seen[11] == pytest.approx(3 * step)
    assert seen[15] == 1.0  # clipped


def test_adaptive_p_falls_to_zero_otherwise():
    controller = AdaptiveProbability(target=0.6, kimg=0.1, interval=2, initial=0.5)
    seen = []
    for _ in range(6):
        controller.observe(-positive())
        seen.append(controller.p.item())
    assert seen == pytest.approx([0.5, 0.5 - 0.16, 0.5 - 0.16, 0.5 - 0.32, 0.5 - 0.32, 0.5 - 0.48])
    for _ in range(4):
        controller.observe(-positive())
    assert controller.p.item() == 0.0  # clipped


def test_adaptive_p_uses_the_sign_mean():
    """r_t = E[sign D(x)]: 3 of 4 logits positive (however small) and 1 negative (however large) is r_t = 0.5."""
    logits = torch.tensor([1e-3, 5.0, 0.2, -100.0])
    for target, direction in ((0.5, 0), (0.4, 1), (0.6, -1)):
        controller = AdaptiveProbability(target=target, kimg=1.0, interval=1, initial=0.5)
        controller.observe(logits)
        assert controller.p.item() == pytest.approx(0.5 + direction * 4 / 1000)


def test_adaptive_p_counts_every_rank():
    """`reduce` sums the sign sums and counts over ranks before the update: a second rank whose 8 logits are all
    negative brings r_t from 1 to 0 (< 0.6, p falls), and its images count toward the step size."""
    other_rank = torch.tensor([-8.0, 8.0], dtype=torch.float64)
    controller = AdaptiveProbability(target=0.6, kimg=0.1, interval=1, initial=0.5,
                                     reduce=lambda sums: sums + other_rank)
    controller.observe(positive())
    assert controller.p.item() == pytest.approx(0.5 - 16 / 100)


def test_adaptive_state_resumes_exactly():
    """Saved mid-interval, loaded into a fresh controller: both continue identically. Another rank (holds_sums
    False) starts its sums from 0, so the ranks' sums still add up to the saved ones."""
    logits = [torch.randn(8, 1, generator=seeded(i)) + 0.5 for i in range(12)]
    a = AdaptiveProbability(target=0.6, kimg=0.1, interval=4)
    for t in logits[:6]:
        a.observe(t)
    state = a.state_dict()
    assert state["steps"] == 2 and state["sums"][1].item() == 16 and state["p"].dtype == torch.float64
    b = AdaptiveProbability(target=0.6, kimg=0.1, interval=4)
    b.load_state_dict(state)
    for t in logits[6:]:
        a.observe(t)
        b.observe(t)
        assert torch.equal(a.p, b.p) and torch.equal(a.sums, b.sums) and a.steps == b.steps
    other = AdaptiveProbability(target=0.6, kimg=0.1, interval=4)
    other.load_state_dict(state, holds_sums=False)
    assert torch.equal(other.p, state["p"]) and other.sums.abs().sum() == 0 and other.steps == 2


def test_adaptive_p_drives_augment_without_a_host_sync():
    """p is a 0-d tensor on the images' device, passed to `augment` as it is."""
    controller = AdaptiveProbability(target=0.6, kimg=0.001, interval=1)
    controller.observe(positive())
    assert controller.p.item() == 1.0 and controller.p.dim() == 0
    x = images(4, 3, 16)
    assert torch.equal(augment(x, ("cutout",), controller.p, seeded()), cutout(x, seeded()))
