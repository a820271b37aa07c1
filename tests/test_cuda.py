"""The GPU path on a real GPU: what only CUDA can show, kept small (run by benchmarks/gpu_check.sh).

Every test here is marked `cuda` and skips without a GPU, which the suite always hides (tests/conftest.py); the GPU
check runs this file with GENVISION_TEST_CUDA=1, which leaves the GPU visible and skips every other test. Covered:
the classifier's calibration on CUDA (`Classifier.calibrate` after a CUDA training run), a GAN and a VAE training
step under bf16 autocast with channels_last, FID features on CUDA against the CPU's (the classifier and random
InceptionV3 weights), and a statistics file written from CUDA features.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers import SHIPPED_CLASSIFIER, make_classifier

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (GENVISION_TEST_CUDA=1)")]

# CUDA features differ from the CPU's by float32 summation order and, with TF32 (on by default for cuDNN
# convolutions), by 10-bit mantissa products: ~1e-3 relative. A feature on the wrong image or a wrong layout moves
# them by O(1).
FEATURE_TOLERANCE = {"rtol": 2e-2, "atol": 2e-2}


@pytest.fixture(scope="module")
def accelerator():
    from genvision.training.common import make_accelerator

    accelerator = make_accelerator("bf16")
    assert accelerator.device.type == "cuda"
    return accelerator


def digits(count: int) -> torch.Tensor:
    from genvision.data import load_dataset

    return load_dataset("mnist5k:test").images[:count]


def test_classifier_calibrates_on_cuda():
    """`calibrate` on CUDA batches of a CUDA model (the end of every `train-classifier` GPU run): its map is made on
    the model's device, and the features match those of the same model calibrated on the CPU."""
    from genvision.imageconv import to_model_range
    from genvision.models.classifier import Classifier

    torch.manual_seed(0)
    cpu_model = Classifier(base_channels=8).eval()
    cuda_model = Classifier(base_channels=8).eval()
    cuda_model.load_state_dict(cpu_model.state_dict())
    cuda_model.cuda()
    images = to_model_range(digits(256))
    cpu_model.calibrate(images.split(64))
    cuda_model.calibrate(images.cuda().split(64))
    assert all(tensor.device.type == "cuda" for tensor in cuda_model.state_dict().values())
    with torch.no_grad():
        expected = cpu_model.features(images[:32])
        got = cuda_model.features(images[:32].cuda()).cpu()
    torch.testing.assert_close(got, expected, **FEATURE_TOLERANCE)


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_a_train_step_under_bf16_autocast(accelerator, kind):
    """Three steps of a tiny GAN or VAE on CUDA with bf16 autocast and channels_last: finite losses, weights moved
    and still float32 on the GPU."""
    from genvision.config import GANConfig, VAEConfig
    from genvision.training.gan import GANTask
    from genvision.training.vae import VAETask

    task_class, config_class = {"gan": (GANTask, GANConfig), "vae": (VAETask, VAEConfig)}[kind]
    fields = dict(dataset="mnist5k:test", resolution=32, channels=1, base_channels=8, latent_dim=8, batch_size=16,
                  num_grid_images=4, fid_every=0, report_to="none", seed=0, channels_last=True,
                  mixed_precision="bf16")
    if kind == "vae":
        fields.update(prior_components=2, prior_fit_images=64)
    config = config_class(**fields)
    config.validate()
    task = task_class(config, accelerator)
    network = task.generator if kind == "gan" else task.model
    before = [p.detach().clone() for p in network.parameters()]
    for _ in range(3):
        losses = task.train_step()
    assert all(torch.isfinite(torch.as_tensor(value)).all() for value in losses.values()), losses
    after = list(network.parameters())
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def classifier_file(tmp_path):
    if SHIPPED_CLASSIFIER.is_file():
        return SHIPPED_CLASSIFIER
    path = tmp_path / "classifier.safetensors"
    make_classifier(path)
    return path


def test_classifier_fid_features_on_cuda_match_the_cpu(tmp_path):
    """The FID path (`sources.extract`: pinned host batches, the extractor on CUDA) gives the CPU's features and
    logits within TF32 rounding, and FIDs that agree."""
    from genvision.metrics.extractors import ClassifierExtractor
    from genvision.metrics.sources import extract
    from genvision.metrics.stats import frechet_distance

    extractor = ClassifierExtractor.from_file(classifier_file(tmp_path))
    images = digits(500)
    cpu, cpu_logits = extract(images, extractor, batch_size=128, keep_features=True, with_logits=True)
    cuda, cuda_logits = extract(images, extractor, batch_size=128, device="cuda", keep_features=True,
                                with_logits=True)
    extractor.to("cpu")
    torch.testing.assert_close(cuda.features().cpu(), cpu.features(), **FEATURE_TOLERANCE)
    torch.testing.assert_close(cuda_logits, cpu_logits, **FEATURE_TOLERANCE)
    mu_cpu, sigma_cpu = (t.cpu().numpy() for t in cpu.mean_and_covariance())
    mu_cuda, sigma_cuda = (t.cpu().numpy() for t in cuda.mean_and_covariance())
    assert frechet_distance(mu_cuda, sigma_cuda, mu_cpu, sigma_cpu) < 1e-2  # real-vs-real floors are ~4 here


def test_inception_features_on_cuda_match_the_cpu(inception_weights):
    """Random-weight InceptionV3 on CUDA (a whole batch per call: `chunk_size`) against the CPU (100 per call)."""
    from genvision.imageconv import to_model_range
    from genvision.metrics.extractors import InceptionExtractor, load_extractor

    extractor = load_extractor("inception", inception_weights=inception_weights)
    assert isinstance(extractor, InceptionExtractor)
    images = to_model_range(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8,
                                          generator=torch.Generator().manual_seed(0)))
    assert extractor.chunk_size("cuda") >= extractor.forward_chunk == extractor.chunk_size("cpu")
    with torch.inference_mode():
        expected = extractor.to("cpu").features(images)
        got = extractor.to("cuda").features(images.cuda()).cpu()
    extractor.to("cpu")
    torch.testing.assert_close(got, expected, **FEATURE_TOLERANCE)


def test_a_statistics_file_made_on_cuda(tmp_path):
    """`genvision.stats(..., device="cuda")` writes a file that loads with the extractor's metadata, with the
    CPU's statistics within TF32 rounding (both computed afresh: no reference cache)."""
    import genvision
    from genvision.metrics.statsfile import load_stats

    classifier = str(classifier_file(tmp_path))
    output = tmp_path / "digits-cuda.npz"
    made = genvision.stats("mnist5k:test", output=output, classifier=classifier, device="cuda", cache=False)
    on_cpu = genvision.stats("mnist5k:test", classifier=classifier, device="cpu", cache=False)
    mu, sigma, metadata = load_stats(output)
    assert made["count"] == on_cpu["count"] == 500 and metadata.num_samples == 500
    np.testing.assert_allclose(mu, on_cpu["mu"], rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(sigma, on_cpu["sigma"], rtol=5e-2, atol=5e-2)
    assert dataclasses.asdict(metadata)["extractor"] == made["metadata"]["extractor"]
