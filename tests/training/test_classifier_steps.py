"""The classifier's steps without host-device syncs: the loss is summed on the device and read once per
POSTFIX_EVERY steps, the accuracy counted on the device and read once, and the random shifts drawn on the device by
the generator passed in (on the CPU the very draws of before, so results stay bit-identical)."""

import contextlib
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from genvision.config import ClassifierConfig
from genvision.data import ImageData, InMemoryBatches
from genvision.imageconv import to_model_range
from genvision.models.classifier import Classifier
from genvision.training import classifier as classifier_training
from genvision.training.classifier import (POSTFIX_EVERY, accuracy, calibration_batches, random_translate,
                                          train_epoch)

from helpers import noise_images


def count_item_calls(monkeypatch) -> list:
    """Every Tensor.item() call from now on appends to the returned list (the call still happens)."""
    calls = []
    real = torch.Tensor.item

    def item(self):
        calls.append(self.shape)
        return real(self)

    monkeypatch.setattr(torch.Tensor, "item", item)
    return calls


def test_random_translate_draws_as_a_cpu_generator_did():
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    shifted = random_translate(images, 2, torch.Generator().manual_seed(5))
    offsets = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(5))  # the draws before
    padded = F.pad(images, (2,) * 4, value=-1.0)
    expected = torch.stack([padded[i, :, r:r + 8, c:c + 8] for i, (r, c) in enumerate(offsets.T.tolist())])
    assert torch.equal(shifted, expected)
    assert random_translate(images, 0, torch.Generator()) is images


def test_train_epoch_reads_the_loss_once_per_window(monkeypatch):
    torch.manual_seed(0)
    model = Classifier(1, 32, 10, base_channels=4, feature_width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    data = ImageData(noise_images(32), torch.arange(32) % 10, 10, "noise")
    batches = InMemoryBatches(data, 8, seed=0)
    accelerator = SimpleNamespace(device=torch.device("cpu"), autocast=contextlib.nullcontext,
                                  backward=lambda loss: loss.backward())
    config = ClassifierConfig(max_shift=2)
    postfixes = []
    steps = 2 * POSTFIX_EVERY + 3
    progress = type("Progress", (), {"__iter__": lambda self: iter(range(steps)),
                                     "set_postfix": lambda self, **kw: postfixes.append(kw)})()
    losses = []
    real_cross_entropy = classifier_training.F.cross_entropy

    def cross_entropy(*args, **kwargs):
        losses.append(real_cross_entropy(*args, **kwargs))
        return losses[-1]

    monkeypatch.setattr(classifier_training.F, "cross_entropy", cross_entropy)
    items = count_item_calls(monkeypatch)
    last = train_epoch(model, optimizer, schedule, batches, accelerator, config, torch.Generator().manual_seed(0),
                       progress)
    assert len(items) == 2 and len(postfixes) == 2 and len(losses) == steps  # one read per window, not per step
    monkeypatch.undo()
    window = torch.zeros(())
    for loss in losses[POSTFIX_EVERY:2 * POSTFIX_EVERY]:  # summed in the loop's order
        window += loss.detach()
    window = window.item()
    assert postfixes[1] == {"loss": f"{window / POSTFIX_EVERY:.3f}"}  # the window's mean loss
    assert not last.requires_grad and torch.equal(last, losses[-1].detach())


def test_accuracy_is_read_once(monkeypatch):
    torch.manual_seed(0)
    model = Classifier(1, 32, 10, base_channels=4, feature_width=8).eval()
    images, labels = noise_images(1200), torch.arange(1200) % 10
    with torch.no_grad():
        expected = sum((model(to_model_range(images[s:s + 500])).argmax(1) == labels[s:s + 500]).sum().item()
                       for s in range(0, 1200, 500)) / 1200
    items = count_item_calls(monkeypatch)
    assert accuracy(model, images, labels) == expected
    assert len(items) == 1  # three batches, one read


def test_calibration_batches_reach_the_models_device():
    """Over the in-memory limit the training images stay on the CPU beside a CUDA model: every calibration batch is
    moved to the device given (here "meta", which no CPU batch is on), in memory and streamed; on the CPU they are
    the first images in order, as before."""
    data = ImageData(noise_images(12), torch.arange(12) % 10, 10, "noise")
    batches = InMemoryBatches(data, 4, seed=0, device="cpu")
    on_cpu = list(calibration_batches(batches, 7, "cpu", batch_size=3))
    torch.testing.assert_close(torch.cat(on_cpu), to_model_range(data.images[:7]), rtol=0, atol=0)
    moved = list(calibration_batches(batches, 7, torch.device("meta"), batch_size=3))
    assert [tuple(batch.shape) for batch in moved] == [(3, 1, 32, 32), (3, 1, 32, 32), (1, 1, 32, 32)]
    assert all(batch.device.type == "meta" and batch.dtype == torch.float32 for batch in moved)
    streamed = iter([(to_model_range(data.images[start:start + 4]), data.labels[start:start + 4])
                     for start in (0, 4, 8)])
    moved = list(calibration_batches(streamed, 7, torch.device("meta")))
    assert len(moved) == 2 and all(batch.device.type == "meta" for batch in moved)
