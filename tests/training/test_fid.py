"""Training FID (`genvision.training.fid.TrainingFID`). The Fréchet step: the reference's square root once, one
eigendecomposition per evaluation, on the run's device, on rank 0 with its value broadcast (extraction and sampling
stubbed). The samples: they stay on the run's device from the generator to the extractor, and score as on the CPU."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fake_cuda import FakeCuda

from genvision import distributed
from genvision.errors import UsageError
from genvision.metrics.extractors import ClassifierExtractor
from genvision.metrics.stats import frechet_distance
from genvision.metrics.statsfile import save_stats
from genvision.training import fid as training_fid


class Stop(Exception):
    """Raised by a spy once it has seen what it records (a meta tensor has no value to go on with)."""


class StubExtractor(torch.nn.Module):
    resizes_internally = False
    feature_blocks = (("all", 12),)  # one block: nothing to take apart


def statistics(seed: int, d: int = 12) -> SimpleNamespace:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3 * d, d, generator=generator, dtype=torch.float64) + 0.1 * seed
    return SimpleNamespace(mu=x.mean(0).numpy(), sigma=np.cov(x.numpy(), rowvar=False))


@pytest.fixture
def evaluator(monkeypatch):
    """make(device) -> a TrainingFID against `statistics(0)` whose generated statistics are `statistics(1)`."""
    reference, generated = statistics(0), statistics(1)
    monkeypatch.setattr(training_fid, "source_statistics", lambda *args, **kwargs: reference)
    monkeypatch.setattr(training_fid, "generated_statistics", lambda *args, **kwargs: generated)
    monkeypatch.setattr(training_fid.TrainingFID, "generated_images", lambda self, sampler, prior=None: None)

    def make(device="cpu"):
        return training_fid.TrainingFID("mnist5k:train", StubExtractor(), 4, 2, 0, "data", device)

    expected = frechet_distance(generated.mu, generated.sigma, reference.mu, reference.sigma)
    return SimpleNamespace(make=make, expected=expected)


@pytest.fixture
def decompositions(monkeypatch):
    """The list of ("eigh" | "eigvalsh", device type) of every symmetric eigendecomposition made."""
    calls = []
    eigh, eigvalsh = torch.linalg.eigh, torch.linalg.eigvalsh

    def spy(name, function):
        def wrapped(matrix):
            calls.append((name, matrix.device.type))
            return function(matrix)
        return wrapped

    monkeypatch.setattr(torch.linalg, "eigh", spy("eigh", eigh))
    monkeypatch.setattr(torch.linalg, "eigvalsh", spy("eigvalsh", eigvalsh))
    return calls


def test_each_evaluation_is_one_eigendecomposition(evaluator, decompositions):
    """The reference's square root at construction (one eigh); each evaluation then one eigvalsh, and the value is
    the plain `frechet_distance` to 1e-10 relative."""
    fid = evaluator.make()
    assert decompositions == [("eigh", "cpu")]
    for _ in range(2):
        assert fid(lambda z: z) == pytest.approx(evaluator.expected, rel=1e-10)
    assert decompositions == [("eigh", "cpu"), ("eigvalsh", "cpu"), ("eigvalsh", "cpu")]


def test_the_distance_is_computed_on_the_runs_device(evaluator, decompositions, monkeypatch):
    """device meta stands for the GPU (a CPU would pass unnoticed): the square root and the per-evaluation
    eigendecomposition are both made there, from the CPU statistics the sources return."""
    fid = evaluator.make("meta")
    assert fid.reference.root.device.type == "meta"
    eigvalsh = torch.linalg.eigvalsh

    def stop(matrix):
        eigvalsh(matrix)
        raise Stop

    monkeypatch.setattr(torch.linalg, "eigvalsh", stop)
    with pytest.raises(Stop):
        fid(lambda z: z)
    assert decompositions == [("eigh", "meta"), ("eigvalsh", "meta")]


def test_only_rank_zero_computes_and_every_rank_returns_its_value(evaluator, decompositions, monkeypatch):
    """On a rank other than 0 nothing is decomposed, at construction or per evaluation: the value is rank 0's,
    broadcast; when rank 0 has none (its error), the other ranks stop too, with a one-line UsageError."""
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    fid = evaluator.make()
    monkeypatch.setattr(distributed, "broadcast_", lambda tensor, source=0: tensor.fill_(7.25))
    assert fid(lambda z: z) == 7.25 and fid.reference is None and decompositions == []
    monkeypatch.setattr(distributed, "broadcast_", lambda tensor, source=0: tensor)  # rank 0 sent NaN
    with pytest.raises(UsageError, match="rank 0"):
        fid(lambda z: z)


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
    on_cpu = training_fid.TrainingFID(str(reference), extractor, 70, LATENT_DIM, seed=1, data_root="data",
                                      device="cpu", batch_size=32)
    expected = on_cpu(sampler)
    try:
        with FakeCuda() as cuda:
            on_cuda = training_fid.TrainingFID(str(reference), extractor, 70, LATENT_DIM, seed=1, data_root="data",
                                               device="cuda", batch_size=32)
            fid = on_cuda(sampler)
    finally:
        extractor.to("cpu")
    assert [copy.dtype for copy in cuda.to_host() if copy.dtype == torch.uint8] == []
    assert [copy.shape[0] for copy in cuda.to_device(torch.float32) if copy.shape[1:] == (LATENT_DIM,)] == [32, 32, 6]
    assert fid == expected


def test_conditional_run_scores_fixed_labels_and_their_class_accuracy(classifier_file, tmp_path):
    """A conditional run: each draw gets its fixed class (`sampling.class_labels` of the run's counts and seed),
    handed to sampler(z, labels) and prior(eps, u, labels) batch by batch; `last_class_accuracy` is the
    classifier's argmax against those classes on the very images scored, the same at every call."""
    from genvision import sampling
    from genvision.metrics.conditional import class_accuracy
    from genvision.metrics.sources import extract

    extractor = ClassifierExtractor.from_file(classifier_file)
    reference = tmp_path / "reference.npz"
    save_stats(reference, np.zeros(extractor.num_features), np.eye(extractor.num_features), extractor.metadata())
    counts = [7] * extractor.num_classes
    fid = training_fid.TrainingFID(str(reference), extractor, 70, LATENT_DIM, seed=1, data_root="data",
                                   device="cpu", batch_size=32, class_counts=counts)
    expected_labels = sampling.class_labels(70, counts, 1)
    seen, images, priors = [], [], []

    def conditional_sampler(latents, labels):
        seen.append(labels)
        out = sampler(latents) * (1 - 0.1 * labels.float())[:, None, None, None]  # the class changes the image
        images.append(out)
        return out

    def prior(eps, u, labels):
        priors.append(labels)
        return eps

    value = fid(conditional_sampler, prior)
    assert [len(labels) for labels in seen] == [32, 32, 6] and torch.equal(torch.cat(seen), expected_labels)
    assert torch.equal(torch.cat(priors), expected_labels)
    from genvision.imageconv import to_uint8

    _, logits = extract(to_uint8(torch.cat(images)), extractor, with_logits=True)
    assert fid.last_class_accuracy == class_accuracy(logits, expected_labels)
    assert fid(conditional_sampler, prior) == value and fid.last_class_accuracy == class_accuracy(logits,
                                                                                                   expected_labels)
    assert training_fid.class_accuracy_log(fid) == {"class_accuracy": round(fid.last_class_accuracy, 5)}


def test_class_accuracy_needs_a_classifier_of_the_runs_classes(classifier_file, tmp_path):
    """Unconditional runs, and a classifier whose class count is not the run's, log no class accuracy."""
    extractor = ClassifierExtractor.from_file(classifier_file)
    reference = tmp_path / "reference.npz"
    save_stats(reference, np.zeros(extractor.num_features), np.eye(extractor.num_features), extractor.metadata())
    other = training_fid.TrainingFID(str(reference), extractor, 20, LATENT_DIM, seed=1, data_root="data",
                                     device="cpu", batch_size=32, class_counts=[3, 4])
    other(lambda latents, labels: sampler(latents))
    assert other.last_class_accuracy is None and training_fid.class_accuracy_log(other) == {}
    plain = training_fid.TrainingFID(str(reference), extractor, 20, LATENT_DIM, seed=1, data_root="data",
                                     device="cpu", batch_size=32)
    plain(sampler)
    assert plain.labels is None and training_fid.class_accuracy_log(plain) == {}


@pytest.mark.parametrize("script", ["train_gan.py", "train_vae.py"])
def test_conditional_runs_log_the_fid_and_class_accuracy_genvision_fid_gives(tmp_path, script):
    """A tiny --conditional run with FID on logs fid and class_accuracy; `genvision fid CKPT REFERENCE
    --num-samples K --seed S` of its checkpoint gives both to the logged digits (the same draws, the same classes),
    and its intra-class FIDs (10 classes of mnist5k:train)."""
    from helpers import TINY_GAN, TINY_VAE, metrics_records, run_genvision, train_to_completion

    out = tmp_path / "run"
    tiny = TINY_GAN if script == "train_gan.py" else [*TINY_VAE, "--prior", "normal"]
    train_to_completion(script, out, *tiny, "--conditional", "--num-steps", "2", "--fid-every", "2",
                        "--num-fid-samples", "60", "--log-every", "1", "--sample-every", "0", "--checkpoint-every", "2",
                        "--report-to", "none", "--seed", "3")
    (logged,) = [record for record in metrics_records(out) if "fid" in record]
    scored = run_genvision("fid", out / "checkpoints" / "step-000002", "mnist5k:train", "--num-samples", "60",
                           "--seed", "3", "--json")
    assert scored.returncode == 0, scored.stderr[-3000:]
    report = json.loads(scored.stdout)
    assert round(report["fid"], 5) == logged["fid"]
    assert round(report["class_accuracy"], 5) == logged["class_accuracy"]
    assert list(report["fid_intra_class"]) == list("0123456789") and report["fid_intra_class_mean"] > 0
