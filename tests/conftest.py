"""Shared test setup: one intra-op thread (tiny models on 2 cores run faster that way) and a private data cache."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Every test and subprocess caches decoded datasets and reference stats in one temp folder, not ~/.cache."""
    cache = tmp_path_factory.mktemp("genvision-cache")
    previous = os.environ.get("GENVISION_CACHE")
    os.environ["GENVISION_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("GENVISION_CACHE", None)
    else:
        os.environ["GENVISION_CACHE"] = previous
