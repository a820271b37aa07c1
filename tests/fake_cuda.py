"""A pretend CUDA device on the CPU, for tests of how code moves tensors to a GPU: `FakeCuda`, a TorchFunctionMode
under which every tensor stays on the CPU while the copies the code asks for are recorded.

Inside it, `tensor.to("cuda")` (any spelling: a device, a string, keywords, `non_blocking` positional) and
`tensor.cuda()` return the tensor on the CPU and record a `Copy` (what was copied, whether its source came from
`pin_memory()`, whether it was asynchronous); `pin_memory()` returns a CPU copy marked as pinned; `tensor.cpu()` is
recorded as a device-to-host copy; factory functions given ``device="cuda"`` make CPU tensors. Code that branches on
``torch.device(device).type == "cuda"`` takes its CUDA branch, and its numbers are the CPU's.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode


@dataclass(frozen=True)
class Copy:
    """One host-to-device (`to`/`cuda`) or device-to-host (`cpu`) copy asked for under `FakeCuda`."""

    kind: str  # "to_device" or "to_host"
    dtype: torch.dtype
    shape: tuple[int, ...]
    pinned: bool = False  # the source came from pin_memory()
    non_blocking: bool = False


def _is_cuda(value) -> bool:
    return isinstance(value, (str, torch.device)) and torch.device(value).type == "cuda"


class FakeCuda(TorchFunctionMode):
    """Records the copies to and from a pretend CUDA device (see the module docstring); `copies` lists them."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[Copy] = []
        self._pinned: dict[int, weakref.ref] = {}  # id -> the tensors pin_memory() returned

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        ref = self._pinned.get(id(tensor))
        return ref is not None and ref() is tensor

    def to_device(self, dtype: torch.dtype | None = None) -> list[Copy]:
        """The host-to-device copies recorded, of `dtype` if given."""
        return [c for c in self.copies if c.kind == "to_device" and (dtype is None or c.dtype == dtype)]

    def to_host(self) -> list[Copy]:
        return [c for c in self.copies if c.kind == "to_host"]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.pin_memory:
            pinned = args[0].clone()  # the mode is off inside its own __torch_function__
            self._pinned[id(pinned)] = weakref.ref(pinned)
            return pinned
        if func is torch.Tensor.is_pinned:
            return self.is_pinned(args[0])
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            tensor, rest = args[0], list(args[1:])
            targets_cuda = func is torch.Tensor.cuda or any(_is_cuda(a) for a in rest) or _is_cuda(
                kwargs.get("device"))
            non_blocking = bool(kwargs.pop("non_blocking", False)) or any(isinstance(a, bool) and a for a in rest)
            if targets_cuda:
                self.copies.append(Copy("to_device", tensor.dtype, tuple(tensor.shape), self.is_pinned(tensor),
                                        non_blocking))
                if func is torch.Tensor.cuda:
                    return tensor
                rest = [a for a in rest if not _is_cuda(a) and not isinstance(a, bool)]
                kwargs.pop("device", None)
                return tensor.to(*rest, **kwargs) if rest or kwargs else tensor
        if func is torch.Tensor.cpu:
            self.copies.append(Copy("to_host", args[0].dtype, tuple(args[0].shape)))
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)

