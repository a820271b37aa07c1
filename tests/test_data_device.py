"""How the data path meets the device: the in-memory limit bounded by the GPU's memory (`in_memory_limit_bytes`)."""

import pytest
import torch

import genvision.data as data
from genvision.config import DataConfig
from genvision.data import (DEVICE_MEMORY_SHARE, InMemoryBatches, StreamingBatches, device_memory_bytes,
                            in_memory_limit_bytes, make_batches)

GIB = 2 ** 30
MNIST5K_TEST_BYTES = 500 * 1 * 32 * 32  # mnist5k:test decoded at 32 px, 1 channel


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
