"""Feature-extractor contract, `resize_for_extractor`, and the offline InceptionV3 path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from genvision.errors import UsageError
from genvision.imageconv import to_model_range
from genvision.metrics.extractors import (
    INCEPTION_ID,
    ClassifierExtractor,
    InceptionExtractor,
    load_extractor,
    resize_for_extractor,
    rgb_to_luma,
)
from genvision.fileio import file_sha256
from helpers import make_classifier, record_calls


# ---------------------------------------------------------------------------------------------------------------
# The classifier extractor.


def test_classifier_extractor_contract(classifier_file):
    extractor = ClassifierExtractor.from_file(classifier_file)
    assert extractor.extractor_id == "classifier"
    assert extractor.weights_hash == file_sha256(classifier_file) and len(extractor.weights_hash) == 64
    assert (extractor.input_size, extractor.input_channels) == (32, 1)
    assert extractor.num_features == 32 and extractor.num_classes == 10
    images = torch.rand(5, 1, 32, 32) * 2 - 1
    with torch.inference_mode():
        features = extractor.features(images)
        logits = extractor.logits(images)
        both = extractor.features_and_logits(images)
        reference = extractor.model(images)
    assert features.shape == (5, 32) and logits.shape == (5, 10)
    torch.testing.assert_close(both[0], features)
    torch.testing.assert_close(logits, reference)  # eval mode: dropout off, same logits as forward()
    assert features.std(dim=0).mean() > 1e-3  # calibrated BatchNorm: features actually vary
    metadata = extractor.metadata("somewhere", 7)
    assert (metadata.extractor, metadata.image_size, metadata.image_channels, metadata.num_samples) == (
        "classifier", 32, 1, 7)
    with pytest.raises(ValueError, match="expects float"):
        extractor.features(torch.zeros(2, 3, 32, 32))


def test_inference_model_folds_batchnorm_and_matches_the_classifier(classifier_file):
    extractor = ClassifierExtractor.from_file(classifier_file)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in extractor.inference_model.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in extractor.model.modules())  # untouched
    images = torch.rand(600, 1, 32, 32) * 2 - 1  # more than one CPU chunk
    with torch.inference_mode():
        features, logits = extractor.features_and_logits(images)
        expected_features = extractor.model.features(images)
        expected_logits = extractor.model(images)
    assert features.shape == (600, 32) and logits.shape == (600, 10)
    torch.testing.assert_close(features, expected_features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)


def test_weights_hash_changes_with_weights(tmp_path, classifier_file):
    other = tmp_path / "other.safetensors"
    make_classifier(other, seed=1)
    first, second = ClassifierExtractor.from_file(classifier_file), ClassifierExtractor.from_file(other)
    assert first.weights_hash != second.weights_hash
    assert first.metadata() != second.metadata()
    assert not first.metadata().same_feature_space(second.metadata())


def test_load_extractor_refuses_non_classifier(tmp_path):
    from safetensors.torch import save_file

    not_classifier = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(not_classifier))
    with pytest.raises(UsageError, match="not a genvision classifier"):
        load_extractor("classifier", classifier=not_classifier)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UsageError, match="not a safetensors classifier"):
        load_extractor("classifier", classifier=text)
    with pytest.raises(UsageError, match="--features"):
        load_extractor("vgg")


# ---------------------------------------------------------------------------------------------------------------
# resize_for_extractor.


def test_resize_gray_to_rgb_repeats_channel():
    gray = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    rgb = resize_for_extractor(gray, 32, 3)
    assert rgb.shape == (4, 3, 32, 32) and rgb.dtype == torch.uint8
    for channel in range(3):
        assert torch.equal(rgb[:, channel], gray[:, 0])


def test_resize_rgb_to_gray_is_pil_luma():
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (3, 3, 17, 23), dtype=torch.uint8, generator=generator)
    luma = rgb_to_luma(rgb)
    for index in range(rgb.shape[0]):
        pil = Image.fromarray(rgb[index].permute(1, 2, 0).numpy(), "RGB").convert("L")
        assert np.array_equal(luma[index, 0].numpy(), np.asarray(pil))
    # extremes: white stays 255, black 0, pure colours give PIL's weights
    pure = torch.tensor([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8)
    pure = pure.view(5, 3, 1, 1)
    assert rgb_to_luma(pure).flatten().tolist() == [255, 0, 76, 150, 29]
    same_size = resize_for_extractor(rgb[:, :, :16, :16], 16, 1)
    assert same_size.shape == (3, 1, 16, 16)
    assert torch.equal(same_size, luma[:, :, :16, :16])


def test_resize_changes_size_with_antialiased_bicubic():
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    small = resize_for_extractor(images, 32, 1)
    assert small.shape == (2, 1, 32, 32) and small.dtype == torch.uint8
    expected = F.interpolate(images.float(), size=(32, 32), mode="bicubic", antialias=True, align_corners=False)
    assert torch.equal(small, expected.round().clamp(0, 255).to(torch.uint8))
    big = resize_for_extractor(images[:, :, :16, :16], 299, 3)
    assert big.shape == (2, 3, 299, 299)
    constant = torch.full((1, 1, 30, 30), 200, dtype=torch.uint8)
    assert torch.equal(resize_for_extractor(constant, 32, 1), torch.full((1, 1, 32, 32), 200, dtype=torch.uint8))


def padded_28(digits: torch.Tensor) -> torch.Tensor:
    """(N, C, 28, 28) -> (N, C, 32, 32) with 2 px of black on every side, as `data.prepare_image` pads digits."""
    padded = torch.zeros(*digits.shape[:2], 32, 32, dtype=torch.uint8)
    padded[..., 2:30, 2:30] = digits
    return padded


@pytest.mark.parametrize("channels", [1, 3])
def test_28px_digits_are_padded_to_32px_like_dataset_specs(channels):
    digits = torch.randint(0, 256, (4, channels, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(resize_for_extractor(digits, 32, channels), padded_28(digits))
    if channels == 1:  # gray repeated to 3 after padding, for a 3-channel extractor at 32 px
        assert torch.equal(resize_for_extractor(digits, 32, 3), padded_28(digits).expand(-1, 3, -1, -1))
    # a larger input size: padded to 32 px first, then resized like any 32-px image
    bigger = resize_for_extractor(padded_28(digits), 64, channels)
    assert torch.equal(resize_for_extractor(digits, 64, channels), bigger)
    # a 28-px input size keeps the digit as it is (as dataset specs decoded at 28 px do)
    assert resize_for_extractor(digits, 28, channels) is digits


@pytest.mark.parametrize("channels", [1, 3])
def test_inception_gets_28px_digits_padded_at_32px(channels):
    """Inception resizes inside its network; a 28-px folder reaches it padded at 32 px, as dataset specs do."""
    from types import SimpleNamespace

    from genvision.metrics.extractors import extractor_side

    inception = SimpleNamespace(resizes_internally=True, input_size=299, input_channels=3)
    assert extractor_side(inception, 28, 28) == 32
    assert extractor_side(inception, 40, 40) == 40 and extractor_side(inception, 32, 48) == 32
    digits = torch.randint(0, 256, (2, channels, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    side = extractor_side(inception, 28, 28)
    expected = padded_28(digits).expand(-1, 3, -1, -1)
    assert torch.equal(resize_for_extractor(digits, side, 3), expected if channels == 1 else padded_28(digits))


def test_resize_center_crops_non_square_and_skips_matching():
    wide = torch.zeros(1, 1, 32, 48, dtype=torch.uint8)
    wide[..., 8:40] = 255  # the central 32x32 square is white, the borders black
    assert torch.equal(resize_for_extractor(wide, 32, 1), torch.full((1, 1, 32, 32), 255, dtype=torch.uint8))
    images = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    assert resize_for_extractor(images, 32, 1) is images
    with pytest.raises(TypeError):
        resize_for_extractor(images.float(), 32, 1)
    with pytest.raises(UsageError):
        resize_for_extractor(torch.zeros(1, 2, 8, 8, dtype=torch.uint8), 32, 1)


# ---------------------------------------------------------------------------------------------------------------
# InceptionV3 (torch-fidelity), offline, on random weights (the inception_weights fixture).


def test_inception_extractor_offline(inception_weights, monkeypatch):
    import genvision.metrics.extractors as extractors

    monkeypatch.setattr(extractors, "_BUILT", {})  # no network built by an earlier test of this process
    loads = record_calls(monkeypatch, torch, "load", "weights_only")
    extractor = load_extractor("inception", inception_weights=inception_weights)
    assert loads == [True]  # our one load, weights_only; torch-fidelity's own torch.load never runs
    again = load_extractor("inception", inception_weights=inception_weights)
    assert loads == [True] and again.module is extractor.module  # built once per process for these weights
    assert isinstance(extractor, InceptionExtractor)
    assert extractor.extractor_id == INCEPTION_ID == "inception-v3-compat"
    assert extractor.weights_hash == file_sha256(inception_weights)
    assert (extractor.input_size, extractor.input_channels, extractor.num_features) == (299, 3, 2048)
    assert extractor.num_classes == 0
    images = resize_for_extractor(torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8), 299, 3)
    with torch.inference_mode():
        features = extractor.features(to_model_range(images))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    calls = []  # a batch goes through the network forward_chunk images at a time, with the same features
    monkeypatch.setattr(extractor, "forward_chunk", 1)
    hook = extractor.module.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    with torch.inference_mode():
        chunked = extractor.features(to_model_range(images))
    hook.remove()
    assert calls == [1, 1]
    torch.testing.assert_close(chunked, features, rtol=1e-5, atol=1e-6)


def test_inception_chunk_fills_a_share_of_the_free_gpu_memory(monkeypatch):
    """100 images per InceptionV3 call on the CPU, as always; on CUDA as many as half the free memory holds at 16 MiB
    an image (a whole batch of 500 on a 141 GB GPU), never fewer than 100."""
    import genvision.metrics.extractors as extractors

    gib, asked = 2 ** 30, []

    def mem_get_info(device=None):
        asked.append(device)
        return free, 141 * gib

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    extractor = InceptionExtractor(torch.nn.Identity(), "0" * 64)
    assert extractor.chunk_size("cpu") == extractor.chunk_size(torch.device("meta")) == 100 and asked == []
    free = 130 * gib
    assert extractor.chunk_size("cuda:1") == int(0.5 * free) // (16 * 2 ** 20) == 4160
    assert asked == [torch.device("cuda:1")]
    free = gib  # a nearly full GPU: the CPU's chunk
    assert extractor.chunk_size("cuda") == 100
    assert (extractors.INCEPTION_IMAGE_BYTES, extractors.CUDA_CHUNK_MEMORY_SHARE) == (16 * 2 ** 20, 0.5)


def test_inception_needs_weights_file(tmp_path):
    pytest.importorskip("torch_fidelity")
    with pytest.raises(UsageError, match="--inception-weights") as info:
        load_extractor("inception")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="does not exist"):
        load_extractor("inception", inception_weights=tmp_path / "missing.pth")
    pickled = tmp_path / "pickled.pth"
    torch.save({"layer": object()}, pickled)  # needs unpickling of arbitrary objects: refused
    with pytest.raises(UsageError, match="weights_only=True"):
        load_extractor("inception", inception_weights=pickled)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(UsageError, match="does not fit"):
        load_extractor("inception", inception_weights=wrong)


def test_dinov2_chunk_fills_a_share_of_the_free_gpu_memory(monkeypatch):
    """32 images per DINOv2 call on the CPU; on CUDA as many as half the free memory holds at 32 KiB per unit of
    embedding width an image (32 MiB for ViT-L/14), never fewer than 32."""
    import genvision.metrics.extractors as extractors

    gib = 2 ** 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 141 * gib))
    network = torch.nn.Identity()
    network.num_features = 1024
    extractor = extractors.Dinov2Extractor(network, "vitl14", "0" * 64)
    assert extractor.extractor_id == "dinov2-vitl14" and extractor.feature_blocks == (("cls", 1024),)
    assert extractor.chunk_size("cpu") == 32
    free = 130 * gib
    assert extractor.chunk_size("cuda") == int(0.5 * free) // (32 * 2 ** 20) == 2080
    free = gib // 4
    assert extractor.chunk_size("cuda") == 32


def test_dinov2_needs_weights_file(tmp_path):
    pytest.importorskip("timm")
    with pytest.raises(UsageError, match="no DINOv2 ViT-L/14 weights found.*--dinov2-weights") as info:
        load_extractor("dinov2")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="--dinov2-weights .*missing.pth does not exist"):
        load_extractor("dinov2", dinov2_model="vits14", dinov2_weights=tmp_path / "missing.pth")
    pickled = tmp_path / "pickled.pth"
    torch.save({"layer": object()}, pickled)  # needs unpickling of arbitrary objects: refused
    with pytest.raises(UsageError, match="weights_only=True"):
        load_extractor("dinov2", dinov2_model="vits14", dinov2_weights=pickled)
