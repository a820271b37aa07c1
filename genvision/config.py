"""Typed configuration: dataclasses are the single source of truth, argparse only adapts them.

Every field has a default and a one-line help text with its unit, written with `opt(default, help)`. The CLI turns
each field into a kebab-case flag (`batch_size` -> `--batch-size`) with `add_config_arguments` and builds the
dataclass back with `config_from_args`; `validate()` then raises `UsageError` naming the flag. The resolved config is
saved as JSON in the run folder and inside every checkpoint (`asdict`/`config_from_dict`).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

from genvision.errors import UsageError

T = TypeVar("T")


def opt(default: Any, help: str, *, choices: tuple | None = None) -> Any:
    """A dataclass field with a default, a one-line help text (with units) and optional choices."""
    return field(default=default, metadata={"help": help, "choices": choices})


def flag_name(name: str) -> str:
    """`batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def require(condition: bool, name: str, expected: str, value: Any) -> None:
    """Raise a one-line UsageError naming the flag, what was expected and the value given."""
    if not condition:
        raise UsageError(f"{flag_name(name)} must be {expected}, got {value!r}")


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass
class DataConfig:
    """Which images to train on and how they are decoded."""

    dataset: str = opt("mnist5k:train", "dataset spec: mnist5k[:train|test], mnist, fashion-mnist, cifar10, svhn, "
                       "celeba (each [:split]) or folder:PATH")
    data_root: str = opt("data", "folder holding torchvision datasets")
    download: bool = opt(False, "let torchvision download missing datasets (needs internet)")
    resolution: int = opt(32, "image side in px, a power of two >= 16")
    channels: int = opt(0, "image channels, 1 or 3; 0 = the dataset's own")
    hflip: bool = opt(False, "random horizontal flips during training (on device)")
    in_memory_limit_gb: float = opt(8.0, "decoded datasets up to this size (GiB) are held on the device; larger "
                                    "ones stream through a DataLoader")

    def validate(self) -> None:
        require(self.resolution >= 16 and is_power_of_two(self.resolution), "resolution",
                "a power of two >= 16", self.resolution)
        require(self.channels in (0, 1, 3), "channels", "0, 1 or 3", self.channels)
        require(self.in_memory_limit_gb >= 0, "in_memory_limit_gb", ">= 0", self.in_memory_limit_gb)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one kebab-case flag per dataclass field, with its default and help."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
            continue
        parser.add_argument(flag_name(f.name), type=kind, default=f.default, choices=f.metadata.get("choices"),
                            metavar=f.name.upper() if not f.metadata.get("choices") else None, help=help_text)


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build and validate a config dataclass from parsed flags (fields absent from `args` keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    config = cls(**values)
    config.validate()
    return config


def config_from_dict(cls: type[T], values: dict) -> T:
    """Rebuild a config saved with `dataclasses.asdict`; unknown keys are an error, missing ones take defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"config has unknown fields {unknown} for {cls.__name__}")
    return cls(**values)
