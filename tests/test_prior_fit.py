"""Posterior means for the mixture prior (`prior_fit.posterior_means`): uint8 images are converted a batch at a time
on the model's device, to the codes of the same images in [-1, 1]."""

import torch

import genvision.imageconv
from genvision.imageconv import to_model_range
from genvision.models.vae import ConvVAE
from genvision.prior_fit import posterior_means
from helpers import noise_images


def test_uint8_images_are_encoded_a_batch_at_a_time_to_the_codes_of_their_model_range(monkeypatch):
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=3, base_channels=4).train()
    images = noise_images(10)
    expected = posterior_means(model, to_model_range(images), batch_size=4)
    converted = []
    real = genvision.imageconv.to_model_range
    monkeypatch.setattr(genvision.imageconv, "to_model_range", lambda batch: converted.append(
        (len(batch), batch.device)) or real(batch))
    codes = posterior_means(model, images, batch_size=4)
    assert converted == [(4, torch.device("cpu")), (4, torch.device("cpu")), (2, torch.device("cpu"))]
    torch.testing.assert_close(codes, expected, rtol=0, atol=0)
    assert codes.dtype == torch.float64 and model.training  # back in train mode
