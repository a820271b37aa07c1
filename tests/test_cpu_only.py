"""The suite runs on the CPU even where a GPU is present (tests/conftest.py): no GPU is visible to the tests or to the
processes they start, so torchrun tests form gloo groups and exact comparisons compare CPU results."""

import os

import torch

from helpers import subprocess_env


def test_no_gpu_is_visible_to_the_tests():
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert not torch.cuda.is_available()


def test_subprocesses_see_no_gpu_unless_told():
    assert subprocess_env()["CUDA_VISIBLE_DEVICES"] == ""
    assert subprocess_env("cache")["CUDA_VISIBLE_DEVICES"] == ""
    assert subprocess_env(CUDA_VISIBLE_DEVICES="0")["CUDA_VISIBLE_DEVICES"] == "0"  # one subprocess may opt in
