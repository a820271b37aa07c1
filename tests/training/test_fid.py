"""Training FID (`genvision.training.fid.TrainingFID`): the generated samples stay on the run's device from the
generator to the extractor, and score as they do on the CPU."""

import numpy as np
import torch

from fake_cuda import FakeCuda

from genvision.metrics.extractors import ClassifierExtractor
from genvision.metrics.statsfile import save_stats
from genvision.training.fid import TrainingFID

LATENT_DIM = 8


def sampler(latents: torch.Tensor) -> torch.Tensor:
    """A fixed 'generator': latents (N, 8) -> images (N, 1, 32, 32) in [-1, 1]."""
    weight = torch.linspace(-1, 1, LATENT_DIM * 32 * 32, device=latents.device).reshape(LATENT_DIM, 32 * 32)
    return torch.tanh(latents @ weight).reshape(-1, 1, 32, 32)


def test_generated_samples_stay_on_the_device_up_to_the_extractor(classifier_file, tmp_path):
    """On a (pretend) GPU no generated batch is copied to the host and back: the only host copies are the
    statistics at the end; the FID is the CPU's."""
    extractor = ClassifierExtractor.from_file(classifier_file)
    reference = tmp_path / "reference.npz"
    save_stats(reference, np.zeros(extractor.num_features), np.eye(extractor.num_features), extractor.metadata())
    on_cpu = TrainingFID(str(reference), extractor, 70, LATENT_DIM, seed=1, data_root="data", device="cpu",
                         batch_size=32)
    expected = on_cpu(sampler)
    try:
        with FakeCuda() as cuda:
            on_cuda = TrainingFID(str(reference), extractor, 70, LATENT_DIM, seed=1, data_root="data", device="cuda",
                                  batch_size=32)
            fid = on_cuda(sampler)
    finally:
        extractor.to("cpu")
    assert [copy.dtype for copy in cuda.to_host() if copy.dtype == torch.uint8] == []
    assert [copy.shape[0] for copy in cuda.to_device(torch.float32) if copy.shape[1:] == (LATENT_DIM,)] == [32, 32, 6]
    assert fid == expected
