"""The ex-post Gaussian-mixture prior of a VAE's latent space (Ghosh et al. 2020).

Ghosh, Sajjadi, Vergari, Black & Schölkopf 2020, "From Variational to Deterministic Autoencoders" (ICLR,
arXiv:1903.12436), Sec. 4 "ex-post density estimation": a trained VAE's aggregate posterior does not fill its
N(0, I) prior, and samples from the holes decode to implausible images; sampling from a density fitted to the
training set's posterior means improves them. `GaussianMixturePrior` holds a full-covariance mixture (fitted by
`prior_fit.fit_latent_prior`) and maps one sample's standard draws (`sampling.standard_draws`) to its latent, so a
sample still depends only on (seed, index) and uses the very N(0, I) draw of the normal prior:

    eps ~ N(0, I) (latent_dim,), u ~ U[0, 1)         k = min{k : w_1 + ... + w_k > u}
    z = mean_k + L_k eps,  L_k L_k^T = covariance_k  (Cholesky factor)

A class-conditional VAE's mixture (`component_classes` given) is one mixture per class (the components of class y
fitted to the posterior means of that class's training images, their weights summing to 1 within the class), and a
sample of class y draws its component among class y's alone: k = the first of class y with cumulated class-y weight
above u.
"""

from __future__ import annotations

import torch
from torch import nn


class GaussianMixturePrior(nn.Module):
    """A full-covariance Gaussian mixture over the latent space: `forward(eps, u)` maps standard draws to latents.

    Buffers (float64): `weights` (K,), summing to 1; `means` (K, D); `covariances` (K, D, D), positive definite.
    A class-conditional mixture also has `component_classes` (K,) int64, the class of each component, and its
    weights sum to 1 within each class; `forward(eps, u, labels)` then samples class labels[i]'s mixture.
    Its state dict is what a VAE checkpoint stores under the role `prior`.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor,
                 component_classes: torch.Tensor | None = None) -> None:
        super().__init__()
        weights, means, covariances = weights.double(), means.double(), covariances.double()
        count, dim = means.shape
        if weights.shape != (count,) or covariances.shape != (count, dim, dim):
            raise ValueError(f"mixture shapes disagree: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                             f"covariances {tuple(covariances.shape)}")
        if component_classes is None:
            weights = weights / weights.sum()
        else:
            component_classes = component_classes.long()
            if component_classes.shape != (count,):
                raise ValueError(f"component_classes {tuple(component_classes.shape)} disagrees with {count} "
                                 "components")
            totals = torch.zeros(int(component_classes.max()) + 1, dtype=torch.float64).index_add_(
                0, component_classes, weights)
            weights = weights / totals[component_classes]  # each class's weights sum to 1
            self.register_buffer("component_classes", component_classes)
        self.register_buffer("weights", weights)
        self.register_buffer("means", means)
        self.register_buffer("covariances", covariances)
        self.register_buffer("scale_tril", torch.linalg.cholesky(covariances), persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "GaussianMixturePrior":
        return cls(state["weights"], state["means"], state["covariances"], state.get("component_classes"))

    @classmethod
    def standard(cls, count: int, dim: int, num_classes: int = 0) -> "GaussianMixturePrior":
        """`count` equal components N(0, I) over `dim` dimensions (with `num_classes` > 0, dealt to the classes
        round-robin, `count` >= num_classes): a mixture of that shape, e.g. to copy another's buffers into."""
        classes = torch.arange(count) % num_classes if num_classes else None
        return cls(torch.ones(count, dtype=torch.float64), torch.zeros(count, dim, dtype=torch.float64),
                   torch.eye(dim, dtype=torch.float64).repeat(count, 1, 1), classes)

    @classmethod
    def per_class(cls, mixtures: list["GaussianMixturePrior"]) -> "GaussianMixturePrior":
        """One class-conditional mixture of unconditional ones, mixture y for class y."""
        classes = torch.cat([torch.full((m.num_components,), y, dtype=torch.long) for y, m in enumerate(mixtures)])
        return cls(torch.cat([m.weights for m in mixtures]), torch.cat([m.means for m in mixtures]),
                   torch.cat([m.covariances for m in mixtures]), classes)

    @property
    def num_classes(self) -> int:
        """0 for an unconditional mixture, else the number of classes."""
        classes = getattr(self, "component_classes", None)
        return 0 if classes is None else int(classes.max()) + 1

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.means.shape[1]

    def components(self, uniforms: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) component indices of uniforms in [0, 1): inverse-CDF sampling of the weights (of a conditional
        mixture: of the weights of class labels[i]'s components)."""
        uniforms = uniforms.double().to(self.weights.device)
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("this mixture is unconditional: it takes no labels")
            edges = torch.cumsum(self.weights, 0)
            return torch.searchsorted(edges, uniforms, right=True).clamp_(max=len(edges) - 1)
        if labels is None:
            raise ValueError(f"this mixture is conditional ({self.num_classes} classes): pass labels, int64 (N,)")
        mine = self.component_classes[None, :] == labels.to(self.weights.device)[:, None]  # (N, K)
        edges = torch.cumsum(self.weights[None, :] * mine, 1)  # (N, K): rises at class labels[i]'s components only
        last = (mine * torch.arange(1, len(self.weights) + 1, device=mine.device)).argmax(1)  # its last component
        found = torch.searchsorted(edges, uniforms[:, None], right=True)[:, 0]
        return torch.minimum(found, last)

    def forward(self, eps: torch.Tensor, uniforms: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """eps (N, D) ~ N(0, I), uniforms (N,) ~ U[0, 1) (and a conditional mixture's labels (N,)) -> latents (N, D)
        in eps's dtype and device."""
        k = self.components(uniforms, labels)
        z = self.means[k] + (self.scale_tril[k] @ eps.double().to(self.means.device)[:, :, None])[:, :, 0]
        return z.to(dtype=eps.dtype, device=eps.device)
