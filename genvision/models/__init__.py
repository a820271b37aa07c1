"""Models: pure `nn.Module`s built from plain arguments (no losses, optimizers or devices inside).

- `classifier.Classifier`: the baseline CNN, also genvision's default FID feature extractor.
- `dcgan.Generator`, `dcgan.Discriminator`: Radford et al. 2015.
- `vae.ConvVAE`: Kingma & Welling 2014.
- `prior.GaussianMixturePrior`: the ex-post latent prior of Ghosh et al. 2020.
"""
