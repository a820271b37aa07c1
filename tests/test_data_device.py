"""How the data path meets the device: the in-memory limit bounded by the GPU's memory (`in_memory_limit_bytes`),
and the DataLoader settings of `StreamingBatches` (`loader_settings`: pinned memory and asynchronous copies on CUDA,
persistent workers), with the CPU path unchanged."""

import pytest
import torch

import genvision.data as data
from genvision.errors import UsageError
from genvision.config import DataConfig
from genvision.data import (DEVICE_MEMORY_SHARE, InMemoryBatches, StreamingBatches, device_memory_bytes,
                            in_memory_limit_bytes, load_dataset, loader_settings, make_batches)

GIB = 2 ** 30
MNIST5K_TEST_BYTES = 500 * 1 * 32 * 32  # mnist5k:test decoded at 32 px, 1 channel


def take(batches, count: int) -> list:
    return [next(batches) for _ in range(count)]


def test_device_memory_is_the_cuda_total(monkeypatch):
    asked = []

    def mem_get_info(device=None):
        asked.append(device)
        return 3 * GIB, 80 * GIB  # (free, total)

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    assert device_memory_bytes("cuda:1") == 80 * GIB and asked == [torch.device("cuda:1")]
    assert device_memory_bytes(torch.device("cpu")) is None and device_memory_bytes("meta") is None
    assert len(asked) == 1  # no CUDA call for other devices


@pytest.mark.parametrize("total_gib, limit_gb, expected", [
    (None, 8.0, 8 * GIB),  # the CPU: --in-memory-limit-gb alone
    (80, 8.0, 8 * GIB),  # a large GPU: the flag binds
    (16, 8.0, 4 * GIB),  # a small GPU: a quarter of its memory
    (16, 0.0, 0),
])
def test_in_memory_limit_is_bounded_by_a_share_of_the_device(monkeypatch, total_gib, limit_gb, expected):
    monkeypatch.setattr(data, "device_memory_bytes", lambda device: None if total_gib is None else total_gib * GIB)
    assert DEVICE_MEMORY_SHARE == 0.25
    assert in_memory_limit_bytes(limit_gb, "cuda") == expected


def test_make_batches_streams_what_exceeds_the_device_share(monkeypatch):
    config = DataConfig(dataset="mnist5k:test")
    seen = []

    def fits(total):
        def device_memory(device):
            seen.append(torch.device(device))
            return total
        return device_memory

    monkeypatch.setattr(data, "device_memory_bytes", fits(int(MNIST5K_TEST_BYTES / DEVICE_MEMORY_SHARE) - 4))
    streamed, channels, num_classes = make_batches(config, 8, seed=0, device="cpu")
    assert isinstance(streamed, StreamingBatches) and (channels, num_classes) == (1, 10)
    monkeypatch.setattr(data, "device_memory_bytes", fits(int(MNIST5K_TEST_BYTES / DEVICE_MEMORY_SHARE)))
    held, _, _ = make_batches(config, 8, seed=0, device="cpu")
    assert type(held) is InMemoryBatches
    assert seen == [torch.device("cpu")] * 2  # asked about the training device


def test_loader_settings():
    assert loader_settings("cuda", 2) == {"pin_memory": True, "non_blocking": True, "persistent_workers": True}
    assert loader_settings(torch.device("cuda", 1), 0) == {"pin_memory": True, "non_blocking": True,
                                                           "persistent_workers": False}
    assert loader_settings("cpu", 2) == {"pin_memory": False, "non_blocking": False, "persistent_workers": True}
    assert loader_settings("cpu", 0) == {"pin_memory": False, "non_blocking": False, "persistent_workers": False}


@pytest.mark.parametrize("num_workers", [0, 1])
def test_streaming_on_the_cpu_matches_in_memory_with_one_loader(num_workers):
    """One DataLoader serves every epoch (its worker persists), nothing is pinned on the CPU, and the batches, across
    epoch boundaries and after a mid-epoch resume, are those of the in-memory path."""
    config = DataConfig(dataset="mnist5k:test", hflip=True, in_memory_limit_gb=0)
    memory = InMemoryBatches(load_dataset("mnist5k:test"), 100, seed=3, hflip=True)
    streaming = StreamingBatches("mnist5k:test", config, 100, seed=3, num_workers=num_workers)
    assert len(streaming) == len(memory) == 5
    first = take(streaming, 1)
    loader, iterator = streaming.loader, streaming._iterator
    assert (loader.pin_memory, loader.persistent_workers, streaming.non_blocking) == (False, num_workers > 0, False)
    workers = [worker.pid for worker in getattr(iterator, "_workers", [])]
    assert len(workers) == num_workers
    got = first + take(streaming, 11)  # across two epoch boundaries
    assert streaming.loader is loader
    if num_workers:
        assert streaming._iterator is iterator and [w.pid for w in iterator._workers] == workers  # not restarted
    for (xi, xl), (yi, yl) in zip(take(memory, 12), got):
        assert torch.equal(xi, yi) and torch.equal(xl, yl)
    state = {"epoch": 1, "position": 3}
    memory.load_state_dict(state)
    streaming.load_state_dict(state)
    for (xi, xl), (yi, yl) in zip(take(memory, 4), take(streaming, 4)):
        assert torch.equal(xi, yi) and torch.equal(xl, yl)
    assert streaming.state_dict() == memory.state_dict() == {"epoch": 2, "position": 2}


def test_streaming_takes_num_workers_from_the_config():
    """--num-workers reaches the streaming DataLoader (2 by default, as before the field existed)."""
    assert DataConfig().num_workers == 2
    config = DataConfig(dataset="mnist5k:test", in_memory_limit_gb=0, num_workers=0)
    streamed, _, _ = make_batches(config, 100, seed=0)
    assert isinstance(streamed, StreamingBatches) and streamed.num_workers == 0
    next(streamed)
    assert streamed.loader.num_workers == 0
    with pytest.raises(UsageError, match="--num-workers must be >= 0, got -1"):
        StreamingBatches("mnist5k:test", config, 100, num_workers=-1)


@pytest.mark.parametrize("hflip", [False, True])
def test_epoch_order_reaches_cuda_through_pinned_memory_without_waiting(hflip):
    """The epoch's permutation (and flips) are drawn on the CPU generator, as on every device, and copied to CUDA
    from page-locked memory asynchronously, not with a blocking copy; on the CPU they are the tensors drawn."""
    from fake_cuda import FakeCuda

    data_ = load_dataset("mnist5k:test")
    with FakeCuda() as cuda:
        batches = InMemoryBatches(data_, 100, seed=3, device="cuda", hflip=hflip)
        on_cuda = take(batches, 6)  # across an epoch boundary
    orders, flips = cuda.to_device(torch.int64), cuda.to_device(torch.bool)
    assert len(orders) == 3  # the labels once, then the order of each of the two epochs
    permutations = [copy for copy in orders if copy.shape == (500,) and copy.pinned]
    assert len(permutations) == 2 and all(copy.non_blocking for copy in permutations)
    assert len(flips) == (2 if hflip else 0) and all(copy.pinned and copy.non_blocking for copy in flips)
    on_cpu = take(InMemoryBatches(data_, 100, seed=3, hflip=hflip), 6)
    for (xi, xl), (yi, yl) in zip(on_cpu, on_cuda):
        assert torch.equal(xi, yi) and torch.equal(xl, yl)
    order = data.epoch_order(500, 3, 0, 100, 0, 1)
    assert data.host_to_device(order, "cpu") is order
