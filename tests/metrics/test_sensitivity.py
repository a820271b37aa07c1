"""Degradation ladders (genvision.metrics.sensitivity): each degradation checked on small images, and the shipped
extractor's FID guarded along the blur and noise ladders (issue 11's acceptance: monotone, blur 0.5 >= 10x floor)."""

import pytest
import torch

from genvision.data import load_dataset
from genvision.metrics import sensitivity
from genvision.metrics.extractors import ClassifierExtractor


def test_blur_keeps_a_flat_image_and_spreads_a_point_like_a_gaussian():
    flat = torch.full((1, 1, 9, 9), 100, dtype=torch.uint8)
    assert torch.equal(sensitivity.gaussian_blur(flat, 1.0), flat)
    point = torch.zeros(1, 1, 15, 15, dtype=torch.uint8)
    point[..., 7, 7] = 255
    blurred = sensitivity.gaussian_blur(point, 1.0).double()
    # centre / neighbour = exp(1 / (2 sigma^2)) for a Gaussian of sigma 1 px (up to rounding to levels)
    assert blurred[0, 0, 7, 7] / blurred[0, 0, 7, 8] == pytest.approx(torch.e ** 0.5, rel=0.03)


def test_noise_dim_jpeg_and_translation_do_what_they_say():
    images = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8)
    noisy = sensitivity.gaussian_noise(torch.full((1, 1, 64, 64), 128, dtype=torch.uint8), 8.0, seed=1)
    assert noisy.double().std().item() == pytest.approx(8.0, rel=0.1)
    assert torch.equal(sensitivity.gaussian_noise(images, 8.0, seed=1), sensitivity.gaussian_noise(images, 8.0, 1))
    assert torch.equal(sensitivity.dim(torch.tensor([[[[200, 11]]]], dtype=torch.uint8), 0.5),
                       torch.tensor([[[[100, 6]]]], dtype=torch.uint8))  # 5.5 rounds half to even: 6
    assert sensitivity.jpeg(images, 90).shape == images.shape
    shifted = sensitivity.translate(images, 2, seed=3)
    for original, moved in zip(images, shifted):  # each image moved 2 px along one axis, black comes in
        candidates = [torch.roll(original, shift, dim) for dim in (1, 2) for shift in (2, -2)]
        assert any(torch.equal(moved[moved > 0], c[moved > 0]) for c in candidates)
        assert (moved == 0).sum() >= 2 * 16


def test_class_dropping_removes_nested_classes_at_equal_size():
    labels = torch.arange(10).repeat_interleave(5)
    images = labels.view(-1, 1, 1, 1).to(torch.uint8).expand(-1, 1, 2, 2).contiguous()
    num = sensitivity.mode_dropping_num(labels, 10)
    assert num == 25
    kept = [set(sensitivity.drop_classes(images, labels, k, num, 10)[:, 0, 0, 0].tolist()) for k in (1, 3, 5)]
    assert [len(classes) for classes in kept] == [9, 7, 5] and kept[0] >= kept[1] >= kept[2]
    with pytest.raises(ValueError, match="only 25 images"):
        sensitivity.drop_classes(images, labels, 5, 26, 10)


def test_shipped_extractor_sees_shape_as_well_as_texture():
    """Regression guard on the shipped weights (500 held-out digits against the 4500 training digits): every ladder
    rises from its floor; a blur of 0.5 px scores at least 10x the floor and one dropped class at least 5x its
    ladder's floor (issue 22's thresholds: the 0.2.0 features gave 20x and 1.8x)."""
    extractor = ClassifierExtractor.shipped()
    reference, held_out = load_dataset("mnist5k:train"), load_dataset("mnist5k:test")
    results = sensitivity.sensitivity(extractor, reference.images, held_out.images, held_out.labels, 10)
    floor = results[0].fid
    ladders = dict.fromkeys(r.ladder for r in results[1:])
    assert list(ladders) == ["Gaussian blur", "Gaussian noise", "JPEG", "dimming", "translation", "mode dropping"]
    for ladder in ladders:
        values = [r.fid for r in results if r.ladder == ladder]
        values = values if ladder == "mode dropping" else [floor] + values  # mode dropping holds its own floor
        assert sensitivity.is_increasing(values), (ladder, values)
    blur_half = next(r.fid for r in results if r.step == "sigma 0.5 px")
    assert blur_half >= 10 * floor, (blur_half, floor)
    mode_floor, one_class = (next(r.fid for r in results if r.step == step) for step in ("0 classes", "1 classes"))
    assert one_class >= 5 * mode_floor, (one_class, mode_floor)


def test_benchmark_script_prints_the_table_and_refuses_a_missing_file(tmp_path):
    from helpers import ROOT, run_python

    result = run_python([str(ROOT / "benchmarks" / "extractor_sensitivity.py")])
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| ladder | step | N |") and len(rows) == 1 + 1 + 13 + 4  # header, floor, steps
    assert "| Gaussian blur | sigma 0.5 px | 500 |" in result.stdout
    assert "shipped: Gaussian blur rises; Gaussian noise rises; JPEG rises" in result.stdout
    missing = run_python([str(ROOT / "benchmarks" / "extractor_sensitivity.py"), "--classifier", str(tmp_path / "x")])
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert f"classifier file {tmp_path / 'x'} does not exist" in missing.stderr
