"""The baseline classifier: shapes, contract, weight files, and the shipped MNIST-5k weights."""

import pytest
import torch

from genvision.data import load_dataset
from genvision.errors import UsageError
from genvision.models.classifier import Classifier
from genvision.training.classifier import accuracy, random_translate
from genvision.weights import load_classifier, save_classifier, shipped_classifier


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("pooling", ["spatial", "global-average"])
def test_shapes_at_both_sizes_and_channel_counts(resolution, channels, pooling):
    model = Classifier(channels, resolution, num_classes=7, base_channels=4, feature_width=12, pooling=pooling).eval()
    images = torch.rand(5, channels, resolution, resolution) * 2 - 1
    assert model(images).shape == (5, 7)
    assert model.features(images).shape == (5, model.num_features) == (5, 12 + 2 * 4)  # layer + low-level block
    features, logits = model.features_and_logits(images)
    torch.testing.assert_close(features, model.features(images))
    torch.testing.assert_close(logits, model(images))
    legacy = Classifier(channels, resolution, 7, 4, 12, pooling, multi_depth=False).eval()
    assert legacy.num_features == 12 and (legacy.features(images) >= 0).all()  # 0.1.0: post-ReLU layer only


@pytest.mark.parametrize("semantic_share", [0.9, 0.5])
def test_calibration_gives_the_semantic_block_its_share_and_whitens_the_low_level_block(semantic_share):
    torch.manual_seed(0)
    model = Classifier(1, 32, base_channels=4, feature_width=12, semantic_share=semantic_share).eval()
    assert model.feature_blocks == (("semantic", 12), ("low-level", 8))
    images = torch.rand(400, 1, 32, 32) * 2 - 1
    model.calibrate(images.split(100))
    features = model.features(images).double()
    torch.testing.assert_close(features.mean(0), torch.zeros(20, dtype=torch.float64), atol=1e-4, rtol=0)
    covariance = torch.cov(features.T)
    semantic = torch.tensor(20 * semantic_share, dtype=torch.float64)  # of D = 20: the features average unit variance
    torch.testing.assert_close(covariance[:12, :12].trace(), semantic, rtol=1e-4, atol=0)
    torch.testing.assert_close(covariance[12:, 12:].trace(), 20 - semantic, rtol=1e-4, atol=0)
    cross = covariance[:12, 12:]  # the low-level block holds only what the semantic block does not predict
    torch.testing.assert_close(cross, torch.zeros_like(cross), atol=1e-4, rtol=0)
    low = covariance[12:, 12:]  # whitened up to the eigenvalue floor: off-diagonal terms vanish
    torch.testing.assert_close(low - torch.diag(low.diagonal()), torch.zeros_like(low), atol=1e-4, rtol=0)


def test_calibration_makes_every_tensor_on_the_layers_device():
    """calibrate creates nothing on the default device: a CPU model calibrates while the default device is "meta"
    (as a CUDA model's calibration would otherwise mix a CPU identity with CUDA scalars), to the same map."""
    torch.manual_seed(0)
    model = Classifier(1, 32, base_channels=4, feature_width=12).eval()
    images = torch.rand(60, 1, 32, 32) * 2 - 1
    model.calibrate(images.split(30))
    expected = {name: getattr(model, name).clone() for name in ("feature_center", "feature_transform")}
    model.feature_center.zero_()
    torch.set_default_device("meta")
    try:
        model.calibrate(images.split(30))
    finally:
        torch.set_default_device(None)
    for name, tensor in expected.items():
        torch.testing.assert_close(getattr(model, name), tensor, rtol=0, atol=0)


def test_calibration_does_not_depend_on_the_signs_eigh_returns(monkeypatch):
    """eigh's eigenvectors are defined up to sign, and CPU and CUDA return different ones (the first GPU check: 5
    of 48 feature columns flipped): the map fixes each sign, so flipped eigenvectors give the same features."""
    torch.manual_seed(0)
    model = Classifier(1, 32, base_channels=4, feature_width=12).eval()
    images = torch.rand(80, 1, 32, 32) * 2 - 1
    model.calibrate(images.split(40))
    expected = model.features(images)
    eigh = torch.linalg.eigh

    def flipped_eigh(matrix):
        eigenvalues, eigenvectors = eigh(matrix)
        signs = torch.ones(eigenvectors.shape[1], dtype=eigenvectors.dtype)
        signs[::2] = -1  # every other eigenvector negated, as another LAPACK may return them
        return eigenvalues, eigenvectors * signs

    monkeypatch.setattr(torch.linalg, "eigh", flipped_eigh)
    model.calibrate(images.split(40))
    torch.testing.assert_close(model.features(images), expected)


def test_classifier_files_of_0_1_0_load_as_the_layer_only_extractor(tmp_path):
    legacy = Classifier(1, 32, base_channels=4, feature_width=8, pooling="global-average", multi_depth=False).eval()
    path = tmp_path / "old.safetensors"
    save_classifier(legacy, path, {"dataset": "x"})
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    architecture = json.loads(metadata["architecture"])
    for key in ("pooling", "multi_depth", "whitening_floor"):  # what 0.1.0 wrote: none of these
        architecture.pop(key)
    save_file(load_file(str(path)), str(path), metadata={**metadata, "architecture": json.dumps(architecture)})
    loaded, _ = load_classifier(path)
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    assert not loaded.multi_depth and loaded.architecture.pooling == "global-average"
    torch.testing.assert_close(loaded.features(images), legacy.features(images))


def test_classifier_files_of_0_2_0_record_the_half_and_half_calibration(tmp_path):
    """A 0.2.0 file has no "semantic_share": it loads with 0.5, the share its stored calibration map was fitted
    with, and gives the features it gave."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = Classifier(1, 32, base_channels=4, feature_width=8, semantic_share=0.5).eval()
    model.calibrate((torch.rand(40, 1, 32, 32) * 2 - 1).split(20))
    path = tmp_path / "clf-0.2.0.safetensors"
    save_classifier(model, path, {"dataset": "x"})
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    architecture = json.loads(metadata["architecture"])
    architecture.pop("semantic_share")
    save_file(load_file(str(path)), str(path), metadata={**metadata, "architecture": json.dumps(architecture)})
    loaded, _ = load_classifier(path)
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    assert loaded.architecture.semantic_share == 0.5 and loaded.multi_depth
    torch.testing.assert_close(loaded.features(images), model.features(images))
    with pytest.raises(UsageError, match="semantic_share must be in"):
        Classifier(1, 32, semantic_share=1.0)


def test_input_contract_is_enforced():
    model = Classifier(1, 32, base_channels=4)
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        model.features(torch.zeros(2, 3, 32, 32))
    with pytest.raises(UsageError):
        Classifier(2, 32)
    with pytest.raises(UsageError):
        Classifier(1, 48)


def test_weights_file_round_trip_and_refusals(tmp_path):
    model = Classifier(1, 32, base_channels=4, feature_width=8).eval()
    path = tmp_path / "clf.safetensors"
    save_classifier(model, path, {"dataset": "x", "test_accuracy": 0.5})
    loaded, info = load_classifier(path)
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(images), model(images))
    assert info["dataset"] == "x" and len(info["sha256"]) == 64
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UsageError, match="junk.safetensors"):
        load_classifier(tmp_path / "junk.safetensors")
    with pytest.raises(UsageError, match="does not exist"):
        load_classifier(tmp_path / "missing.safetensors")


def test_shipped_classifier_reaches_98_percent_on_mnist5k_test():
    model, info = shipped_classifier("mnist5k")
    test = load_dataset("mnist5k:test")
    assert accuracy(model, test.images, test.labels) >= 0.98
    assert info["test_accuracy"] >= 0.98 and info["dataset"] == "mnist5k:train"


def test_random_translate_shifts_whole_images_and_fills_black():
    images = torch.full((4, 1, 8, 8), -1.0)
    images[:, :, 3:5, 3:5] = 1.0  # a 2x2 bright square in the middle
    shifted = random_translate(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    assert ((shifted == 1.0).sum(dim=(1, 2, 3)) == 4).all()  # the square moved, intact (|shift| <= 2)
    assert set(shifted.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(random_translate(images, 0, torch.Generator()), images)
