"""Tests for genvision.models.prior.GaussianMixturePrior: its class-conditional form (one mixture per class)."""

import pytest
import torch

from genvision.models.prior import GaussianMixturePrior


def _mixture(weights, means) -> GaussianMixturePrior:
    weights, means = torch.tensor(weights, dtype=torch.float64), torch.tensor(means, dtype=torch.float64)
    return GaussianMixturePrior(weights, means, 0.01 * torch.eye(means.shape[1], dtype=torch.float64).repeat(
        len(weights), 1, 1))


def test_per_class_mixture_samples_only_the_class_components() -> None:
    first = _mixture([1.0, 3.0], [[0.0, 0.0], [1.0, 1.0]])
    second = _mixture([2.0], [[10.0, 10.0]])
    mixture = GaussianMixturePrior.per_class([first, second])
    assert mixture.num_classes == 2 and first.num_classes == 0
    assert torch.equal(mixture.component_classes, torch.tensor([0, 0, 1]))
    torch.testing.assert_close(mixture.weights, torch.tensor([0.25, 0.75, 1.0], dtype=torch.float64))
    uniforms = torch.tensor([0.1, 0.3, 0.999999, 0.0, 0.5])
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert mixture.components(uniforms, labels).tolist() == [0, 1, 1, 2, 2]
    z = mixture(torch.zeros(5, 2), uniforms, labels)
    torch.testing.assert_close(z, torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [10.0, 10.0], [10.0, 10.0]]))
    with pytest.raises(ValueError, match="conditional"):
        mixture(torch.zeros(5, 2), uniforms)
    with pytest.raises(ValueError, match="unconditional"):
        first(torch.zeros(5, 2), uniforms, labels)


def test_per_class_mixture_state_dict_round_trip() -> None:
    mixture = GaussianMixturePrior.per_class([_mixture([1.0], [[0.0]]), _mixture([1.0, 1.0], [[1.0], [2.0]])])
    state = mixture.state_dict()
    assert sorted(state) == ["component_classes", "covariances", "means", "weights"]
    again = GaussianMixturePrior.from_state_dict(state)
    assert torch.equal(again.component_classes, mixture.component_classes)
    torch.testing.assert_close(again.weights, mixture.weights)
    shaped = GaussianMixturePrior.standard(3, 1, num_classes=2)  # what other ranks copy rank 0's buffers into
    assert [tuple(b.shape) for b in shaped.buffers()] == [tuple(b.shape) for b in mixture.buffers()]
    assert sorted(GaussianMixturePrior.standard(3, 1).state_dict()) == ["covariances", "means", "weights"]
