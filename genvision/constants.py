"""Named values that several layers share, defined once at the bottom of the layers.

Seeds: every seeded stream of genvision (a sample's latents, an epoch's order, a rank's training noise, a bootstrap
resample) is a `torch.Generator` seeded with ``seed * SEED_STRIDE + offset``; the prime stride keeps the streams of
consecutive seeds from overlapping for any offset below it.
"""

SEED_STRIDE = 1_000_003  # seed s, stream i -> generator seed s * SEED_STRIDE + i (a prime above any stream index)

PRIOR_CHOICES = ("normal", "gmm")  # latents a VAE samples from: N(0, I), or the ex-post Gaussian mixture
PRIOR_FLAG_CHOICES = ("auto", *PRIOR_CHOICES)  # --prior: auto = a VAE run's saved --prior, else normal

PROCESS_GROUP_TIMEOUT_MINUTES = 60.0  # --process-group-timeout default: minutes a rank waits in a collective
