"""config: dataclass fields <-> kebab-case flags, and validation errors that name the flag."""

import argparse
import dataclasses

import pytest

from genvision.config import (ClassifierConfig, DataConfig, GANConfig, ProcessGroupConfig, RunConfig, VAEConfig,
                              add_config_arguments, config_from_args, config_from_dict, flag_name, given_fields)
from genvision.errors import UsageError


def _parse(argv, cls=ClassifierConfig):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


def test_flag_name():
    assert flag_name("batch_size") == "--batch-size"
    assert flag_name("in_memory_limit_gb") == "--in-memory-limit-gb"


def test_defaults_round_trip():
    assert _parse([]) == ClassifierConfig()
    assert _parse([], DataConfig) == DataConfig()


def test_every_field_has_a_kebab_flag_with_help():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ClassifierConfig)
    flags = {option for action in parser._actions for option in action.option_strings}
    for field in dataclasses.fields(ClassifierConfig):
        assert flag_name(field.name) in flags
        assert field.metadata.get("help")


def test_flags_round_trip():
    config = _parse(["--batch-size", "16", "--resolution", "64", "--channels", "3", "--dataset", "mnist5k:test",
                     "--lr", "0.01", "--epochs", "2", "--hflip", "--download", "--in-memory-limit-gb", "0.5",
                     "--mixed-precision", "bf16", "--out-dir", "runs/x", "--seed", "7", "--max-shift", "0",
                     "--num-workers", "6"])
    assert config == dataclasses.replace(
        ClassifierConfig(), batch_size=16, resolution=64, channels=3, dataset="mnist5k:test", lr=0.01, epochs=2,
        hflip=True, download=True, in_memory_limit_gb=0.5, mixed_precision="bf16", out_dir="runs/x", seed=7,
        max_shift=0, num_workers=6)
    assert isinstance(config.batch_size, int) and isinstance(config.lr, float)
    assert config_from_dict(ClassifierConfig, dataclasses.asdict(config)) == config


def test_a_renamed_field_keeps_its_former_flag():
    assert _parse(["--feature-width", "8"]).feature_width == 8
    assert _parse(["--num-features", "8"]).feature_width == 8  # the flag's name before the field was renamed


def test_boolean_flags_have_no_variant():
    assert _parse(["--hflip"]).hflip is True
    assert _parse(["--hflip", "--no-hflip"]).hflip is False
    assert _parse(["--no-hflip"]).hflip is False
    assert _parse(["--overwrite"]).overwrite is True


def test_choices_are_enforced_by_argparse():
    with pytest.raises((SystemExit, argparse.ArgumentError)):
        _parse(["--mixed-precision", "fp32"])
    with pytest.raises((SystemExit, argparse.ArgumentError)):
        _parse(["--batch-size", "ten"])


@pytest.mark.parametrize("argv, flag, words", [
    (["--resolution", "48"], "--resolution", "must be one of 32, 64"),
    (["--resolution", "8"], "--resolution", "must be one of 32, 64"),
    (["--resolution", "128"], "--resolution", "must be one of 32, 64"),
    (["--batch-size", "0"], "--batch-size", "> 0"),
    (["--batch-size", "-1"], "--batch-size", "> 0"),
    (["--channels", "2"], "--channels", "0, 1 or 3"),
    (["--in-memory-limit-gb", "-1"], "--in-memory-limit-gb", ">= 0"),
    (["--num-workers", "-1"], "--num-workers", ">= 0"),
    (["--epochs", "0"], "--epochs", "> 0"),
    (["--lr", "0"], "--lr", "> 0"),
    (["--label-smoothing", "1"], "--label-smoothing", "[0, 1)"),
    (["--max-shift", "-1"], "--max-shift", ">= 0"),
    (["--process-group-timeout", "0"], "--process-group-timeout", "> 0"),
    (["--process-group-timeout", "-5"], "--process-group-timeout", "> 0"),
    (["--process-group-timeout", "nan"], "--process-group-timeout", "> 0"),
    (["--process-group-timeout", "inf"], "--process-group-timeout", "> 0"),
])
def test_validate_names_the_flag(argv, flag, words):
    with pytest.raises(UsageError) as error:
        _parse(argv)
    message = str(error.value)
    assert flag in message and words in message and argv[1] in message and "\n" not in message
    assert error.value.exit_code == 2


@pytest.mark.parametrize("cls, expected", [(GANConfig, "one of 32, 64, 128"), (VAEConfig, "one of 32, 64, 128"),
                                           (DataConfig, "a power of two >= 16")])
def test_resolution_message_and_help_say_what_each_command_accepts(cls, expected):
    with pytest.raises(UsageError, match=f"--resolution must be {expected}, got 48"):
        _parse(["--resolution", "48"], cls)
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(parser, cls)
    help_text = " ".join(parser.format_help().split())
    accepted = "a power of two >= 16" if cls is DataConfig else "32, 64 or 128"
    assert f"--resolution RESOLUTION image side in px{',' if cls is DataConfig else ':'} {accepted} (default: 32)" \
        in help_text, help_text


def test_given_fields_are_the_flags_on_the_command_line():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, GANConfig)
    args = parser.parse_args(["--num-steps", "3000", "--no-hflip", "--base-channels", "8"])
    assert given_fields(GANConfig, args) == {"num_steps", "hflip", "base_channels"}  # even when equal to the default
    config = config_from_args(GANConfig, args)
    assert config == dataclasses.replace(GANConfig(), base_channels=8) and type(config.lr) is float
    assert given_fields(GANConfig, parser.parse_args([])) == set()


def test_run_config_allows_other_resolutions():
    assert _parse(["--resolution", "128"], RunConfig).resolution == 128
    assert _parse(["--resolution", "16"], DataConfig).resolution == 16


def test_config_from_dict_rejects_unknown_keys_and_fills_defaults():
    with pytest.raises(UsageError, match="bogus"):
        config_from_dict(ClassifierConfig, {"bogus": 1})
    assert config_from_dict(ClassifierConfig, {"epochs": 3}) == dataclasses.replace(ClassifierConfig(), epochs=3)


def test_resolved_eval_dataset():
    assert ClassifierConfig(dataset="mnist5k:train").resolved_eval_dataset() == "mnist5k:test"
    assert ClassifierConfig(dataset="cifar10").resolved_eval_dataset() == "cifar10:test"
    assert ClassifierConfig(dataset="celeba:train").resolved_eval_dataset() == "celeba:valid"
    assert ClassifierConfig(dataset="folder:x/y").resolved_eval_dataset() == "folder:x/y"
    assert ClassifierConfig(eval_dataset="mnist:test").resolved_eval_dataset() == "mnist:test"


@pytest.mark.parametrize("cls", [GANConfig, VAEConfig, ClassifierConfig, ProcessGroupConfig])
def test_every_command_that_starts_a_process_group_has_its_timeout(cls):
    assert cls().process_group_timeout == 60.0  # minutes
    assert _parse(["--process-group-timeout", "90"], cls).process_group_timeout == 90.0
    with pytest.raises(UsageError, match="--process-group-timeout must be > 0"):
        _parse(["--process-group-timeout", "0"], cls)


def test_a_config_saved_without_the_process_group_timeout_loads_with_the_default():
    saved = dataclasses.asdict(GANConfig(num_steps=5))
    del saved["process_group_timeout"]
    assert config_from_dict(GANConfig, saved) == GANConfig(num_steps=5)
