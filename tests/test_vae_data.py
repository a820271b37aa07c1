"""The images a VAE's mixture prior is fitted to (`vae_data.prior_fit_images`): uint8, the very inputs the
held-out preparation of --dataset gives (binarised the same for Bernoulli VAEs), converted a chunk at a time."""

import pytest
import torch

import genvision.imageconv
from genvision.config import VAEConfig
from genvision.imageconv import to_model_range
from genvision.vae_data import held_out_images, prior_fit_images
from helpers import noise_images, write_pngs


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("fit_images", [7, 50])  # a seeded subset of the 20 images, or all of them
def test_prior_fit_images_are_the_prepared_training_images_converted_a_chunk_at_a_time(tmp_path, monkeypatch,
                                                                                       likelihood, fit_images):
    write_pngs(noise_images(20), tmp_path / "images")
    config = VAEConfig(dataset=f"folder:{tmp_path / 'images'}", likelihood=likelihood, prior_fit_images=fit_images,
                       seed=3)
    _, prepared = held_out_images(config, config.dataset)  # the whole set in [-1, 1], as the fit used to read it
    if fit_images < len(prepared):
        chosen = torch.randperm(len(prepared), generator=torch.Generator().manual_seed(config.seed))[:fit_images]
        prepared = prepared[chosen.sort().values]
    converted = []
    real = genvision.imageconv.to_model_range
    monkeypatch.setattr(genvision.imageconv, "to_model_range", lambda images: converted.append(len(images)) or
                        real(images))
    images = prior_fit_images(config, chunk=3)
    assert images.dtype == torch.uint8 and max(converted, default=0) <= 3  # never the whole set in float
    torch.testing.assert_close(to_model_range(images), prepared, rtol=0, atol=0)
