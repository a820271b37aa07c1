"""Conditional metrics (`genvision.metrics.conditional`): class accuracy against hand-counted values, intra-class FID
grouped by label on hand-made features, at the floor for a class against itself, and on real digits."""

from __future__ import annotations

import pytest
import torch

from genvision.errors import UsageError
from genvision.metrics import conditional
from genvision.metrics.stats import frechet_distance


def test_class_accuracy_counts_argmax_hits():
    """Rows 0, 1 and 3 hit their requested class, row 2 does not: 3 / 4; a tie goes to the lowest index."""
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.0], [1.0, 1.0, 0.0]])
    assert conditional.class_accuracy(logits, torch.tensor([0, 1, 2, 0])) == 0.75
    assert conditional.class_accuracy(logits, torch.tensor([0, 1, 1, 0])) == 1.0
    assert conditional.class_accuracy(logits, torch.tensor([1, 0, 0, 1])) == 0.0
    assert conditional.per_class_accuracy(logits, torch.tensor([0, 1, 2, 0]), 4) == [1.0, 1.0, 0.0, None]


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([0, 1]), "expected 3 labels"),
    (torch.tensor([0, 1, 3]), "run from 0 to 3, but the classifier has 3 classes"),
    (torch.tensor([0.0, 1.0, 2.0]), "must be integers"),
])
def test_class_accuracy_refuses_bad_labels_in_one_line(labels, message):
    with pytest.raises(UsageError, match=message):
        conditional.class_accuracy(torch.zeros(3, 3), labels)


def class_features(seed: int, counts: list[int], dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of class c around mean (c, 2c, ...) with their own spread, rows shuffled; (features, labels)."""
    generator = torch.Generator().manual_seed(seed)
    rows, labels = [], []
    for label, count in enumerate(counts):
        scale = 1.0 + 0.5 * label
        rows.append(label * torch.arange(1, dim + 1, dtype=torch.float64)
                    + scale * torch.randn(count, dim, generator=generator, dtype=torch.float64))
        labels.append(torch.full((count,), label))
    order = torch.randperm(sum(counts), generator=generator)
    return torch.cat(rows)[order], torch.cat(labels)[order]


def test_intra_class_fid_groups_rows_by_label():
    """Each class's FID is the Fréchet distance of exactly its own rows on each side (hand-grouped), whatever the
    row order; the mean is their average."""
    generated, requested = class_features(0, [30, 40, 50])
    reference, labels = class_features(1, [60, 20, 45])
    distances, mean = conditional.intra_class_fid(generated, requested, reference, labels, ["a", "b", "c"])
    assert list(distances) == ["a", "b", "c"]
    for label, name in enumerate("abc"):
        a, b = generated[requested == label].numpy(), reference[labels == label].numpy()
        expected = frechet_distance(a.mean(0), torch.from_numpy(a).T.cov(), b.mean(0), torch.from_numpy(b).T.cov())
        torch.testing.assert_close(distances[name], expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mean, sum(distances.values()) / 3)
    # Mapping class i of the generator onto another reference label compares with that label's rows.
    swapped, _ = conditional.intra_class_fid(generated, requested, reference, labels, ["a", "b", "c"], [2, 1, 0])
    a, b = generated[requested == 0].numpy(), reference[labels == 2].numpy()
    torch.testing.assert_close(swapped["a"], frechet_distance(a.mean(0), torch.from_numpy(a).T.cov(), b.mean(0),
                                                              torch.from_numpy(b).T.cov()), rtol=1e-9, atol=1e-9)
    assert swapped["a"] > 10 * distances["a"]


def test_intra_class_fid_of_a_class_against_itself_is_zero():
    features, labels = class_features(2, [25, 25, 30])
    distances, mean = conditional.intra_class_fid(features, labels, features, labels, ["0", "1", "2"])
    torch.testing.assert_close(torch.tensor(list(distances.values()), dtype=torch.float64),
                               torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-9)
    assert mean < 1e-9


@pytest.mark.parametrize("generated_counts, reference_counts, message", [
    ([5, 1], [5, 5], "class 'b' has 1 generated sample;"),
    ([5, 5], [0, 5], "class 'a' has 0 reference images;"),
])
def test_a_class_with_fewer_than_two_samples_is_refused_in_one_line(generated_counts, reference_counts, message):
    generated, requested = class_features(3, generated_counts)
    reference, labels = class_features(4, reference_counts)
    with pytest.raises(UsageError, match=message) as error:
        conditional.intra_class_fid(generated, requested, reference, labels, ["a", "b"])
    assert "\n" not in str(error.value)


def test_classes_are_matched_by_name_or_by_index():
    labels = torch.tensor([0, 1, 2, 2])
    assert conditional.match_classes(["cat", "dog"], ("ant", "cat", "dog"), labels) == ([1, 2], "")
    mapping, why = conditional.match_classes(["cat", "eel"], ("ant", "cat", "dog"), labels)
    assert mapping is None and "no class subfolder named eel" in why
    assert conditional.match_classes(["0", "1", "2"], (), labels) == ([0, 1, 2], "")
    mapping, why = conditional.match_classes(["0", "1"], (), labels)
    assert mapping is None and why == "the reference has 3 classes, the generator 2"


# ---------------------------------------------------------------------------------------------------------------
# Real digits, the shipped classifier.


@pytest.fixture(scope="module")
def digits():
    """(features, logits, labels) of mnist5k:test (500 held-out digits, 50 per class) with the shipped classifier,
    through the sources' labels (`need_labels`)."""
    from genvision.metrics.extractors import ClassifierExtractor
    from genvision.metrics.sources import source_statistics

    extractor = ClassifierExtractor.shipped("mnist5k:test", torch.device("cpu"))
    result = source_statistics("mnist5k:test", extractor, need_features=True, need_logits=True, need_labels=True)
    return result.features.double(), result.logits, result.labels


def test_class_accuracy_of_real_held_out_digits_is_at_least_98_percent(digits):
    _, logits, labels = digits
    assert labels.bincount().tolist() == [50] * 10
    assert conditional.class_accuracy(logits, labels) >= 0.98


def test_intra_class_fid_of_real_digits_against_themselves_is_at_the_floor(digits):
    """A class against itself: 0; its two halves against each other: far below two different classes."""
    features, _, labels = digits
    names = [str(label) for label in range(10)]
    itself, mean = conditional.intra_class_fid(features, labels, features, labels, names)
    assert max(itself.values()) < 1e-8 and mean < 1e-8
    rank = torch.zeros_like(labels)  # position of each digit among those of its class
    for label in range(10):
        rank[labels == label] = torch.arange(int((labels == label).sum()))
    first, second = rank % 2 == 0, rank % 2 == 1
    halves, halves_mean = conditional.intra_class_fid(features[first], labels[first], features[second],
                                                      labels[second], names)
    other, other_mean = conditional.intra_class_fid(features[first], labels[first], features[second],
                                                    (labels[second] + 1) % 10, names)
    assert halves_mean < other_mean / 5
    assert all(halves[name] < other[name] for name in names)


# ---------------------------------------------------------------------------------------------------------------
# Distributed evaluation: two gloo processes equal one.


def test_conditional_fid_under_torchrun_equals_one_process(tmp_path, monkeypatch):
    """`torchrun --nproc_per_node 2 -m genvision fid CONDITIONAL_RUN mnist5k:train` (300 samples in batches of 64:
    ranks take 192 and 108): the requested labels are gathered in the one-process order, so class accuracy is the
    same number and each intra-class FID the one-process value to rounding (float64 sums added in another order)."""
    import json

    from helpers import TINY_GAN, cli, free_port, run_python, subprocess_env, train_to_completion

    run = tmp_path / "run"
    train_to_completion("train_gan.py", run, *TINY_GAN, "--conditional", "--num-steps", "2", "--log-every", "0",
                        "--sample-every", "0")
    flags = [run, "mnist5k:train", "--json", "--num-samples", "300", "--batch-size", "64"]
    proc = run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
                       "--master-port", str(free_port()), "-m", "genvision", "fid", *map(str, flags)],
                      env=subprocess_env(tmp_path / "cache", CUDA_VISIBLE_DEVICES=""), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    two = json.loads(line)
    monkeypatch.setenv("GENVISION_CACHE", str(tmp_path / "other"))
    code, stdout, stderr = cli("fid", *flags, "--no-cache")
    assert code == 0, stderr[-3000:]
    one = json.loads(stdout)
    assert two["class_accuracy"] == one["class_accuracy"]
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-6)
    assert list(two["fid_intra_class"]) == list(one["fid_intra_class"]) == list("0123456789")
    for name, value in one["fid_intra_class"].items():
        assert two["fid_intra_class"][name] == pytest.approx(value, rel=1e-6)
    assert two["fid_intra_class_mean"] == pytest.approx(one["fid_intra_class_mean"], rel=1e-6)
