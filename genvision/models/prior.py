"""The ex-post Gaussian-mixture prior of a VAE's latent space (Ghosh et al. 2020).

Ghosh, Sajjadi, Vergari, Black & Schölkopf 2020, "From Variational to Deterministic Autoencoders" (ICLR,
arXiv:1903.12436), Sec. 4 "ex-post density estimation": a trained VAE's aggregate posterior does not fill its
N(0, I) prior, and samples from the holes decode to implausible images; sampling from a density fitted to the
training set's posterior means improves them. `GaussianMixturePrior` holds a full-covariance mixture (fitted by
`prior_fit.fit_latent_prior`) and maps one sample's standard draws (`sampling.standard_draws`) to its latent, so a
sample still depends only on (seed, index) and uses the very N(0, I) draw of the normal prior:

    eps ~ N(0, I) (latent_dim,), u ~ U[0, 1)         k = min{k : w_1 + ... + w_k > u}
    z = mean_k + L_k eps,  L_k L_k^T = covariance_k  (Cholesky factor)
"""

from __future__ import annotations

import torch
from torch import nn



class GaussianMixturePrior(nn.Module):
    """A full-covariance Gaussian mixture over the latent space: `forward(eps, u)` maps standard draws to latents.

    Buffers (float64): `weights` (K,), summing to 1; `means` (K, D); `covariances` (K, D, D), positive definite.
    Its state dict is what a VAE checkpoint stores under the role `prior`.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor) -> None:
        super().__init__()
        weights, means, covariances = weights.double(), means.double(), covariances.double()
        count, dim = means.shape
        if weights.shape != (count,) or covariances.shape != (count, dim, dim):
            raise ValueError(f"mixture shapes disagree: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                             f"covariances {tuple(covariances.shape)}")
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means)
        self.register_buffer("covariances", covariances)
        self.register_buffer("scale_tril", torch.linalg.cholesky(covariances), persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "GaussianMixturePrior":
        return cls(state["weights"], state["means"], state["covariances"])

    @classmethod
    def standard(cls, count: int, dim: int) -> "GaussianMixturePrior":
        """`count` equal components N(0, I) over `dim` dimensions: a mixture of that shape, e.g. to copy another's
        buffers into."""
        return cls(torch.ones(count, dtype=torch.float64), torch.zeros(count, dim, dtype=torch.float64),
                   torch.eye(dim, dtype=torch.float64).repeat(count, 1, 1))

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.means.shape[1]

    def components(self, uniforms: torch.Tensor) -> torch.Tensor:
        """(N,) component indices of uniforms in [0, 1): inverse-CDF sampling of the weights."""
        edges = torch.cumsum(self.weights, 0)
        return torch.searchsorted(edges, uniforms.double().to(edges.device), right=True).clamp_(max=len(edges) - 1)

    def forward(self, eps: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """eps (N, D) ~ N(0, I), uniforms (N,) ~ U[0, 1) -> latents (N, D) in eps's dtype and device."""
        k = self.components(uniforms)
        z = self.means[k] + (self.scale_tril[k] @ eps.double().to(self.means.device)[:, :, None])[:, :, 0]
        return z.to(dtype=eps.dtype, device=eps.device)
