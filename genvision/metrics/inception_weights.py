"""Where the InceptionV3 weights of FID come from: its `weights_fetch.WeightsSpec`, and that module's functions bound
to it.

The TF-compatible InceptionV3 of the FID papers (the 2015-12-05 TensorFlow graph of Heusel et al. 2017, ported to
PyTorch by pytorch-fid and torch-fidelity) is one 95,628,359-byte state dict, `OFFICIAL_SHA256`, published under two
names: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (`DEFAULT_URL`) and pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``. Either loads into torch-fidelity's network.

`resolve` takes the first of ``--inception-weights``, ``$GENVISION_INCEPTION_WEIGHTS``, the torch hub cache and
(with ``download=True``) a download by `fetch`. A cached or downloaded file is kept only if its SHA-256 starts with
the hex prefix in its file name (torch.hub's ``NAME-<hex>.EXT``; a name without one is refused), and under the
official prefix only if it is the official digest. A download is bounded: at most `OFFICIAL_SIZE` bytes under the
official name (`MAX_OTHER_SIZE` otherwise) and `DEADLINE_S` seconds in all (`weights_fetch`). The constants are
read when each function is called (`spec`).
"""

from __future__ import annotations

from pathlib import Path

from genvision.metrics import weights_fetch
from genvision.metrics.weights_fetch import (HASH_PREFIX, MIN_PREFIX, cache_dir, check_http_url,  # noqa: F401
                                             hash_prefix, sha256_of, url_file_name)

OFFICIAL_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
TORCH_FIDELITY_NAME = "weights-inception-2015-12-05-6726825d.pth"
PYTORCH_FID_NAME = "pt_inception-2015-12-05-6726825d.pth"
DEFAULT_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TORCH_FIDELITY_NAME}"
WEIGHTS_ENV = "GENVISION_INCEPTION_WEIGHTS"
URL_ENV = "GENVISION_INCEPTION_URL"
OFFICIAL_SIZE = 95_628_359  # bytes of the official file (both names; same SHA-256)
MAX_OTHER_SIZE = 2 * OFFICIAL_SIZE  # bytes a file under any other name may have: custom weights, generously
TIMEOUT_S = 60.0  # seconds a download may wait for the server on any one read
DEADLINE_S = 30 * 60.0  # seconds a whole download may take (connect, redirects, headers, body) before it is cut

InceptionWeights = weights_fetch.ResolvedWeights  # a resolved file: path, origin, sha256 (and `official`)


def spec() -> weights_fetch.WeightsSpec:
    """The InceptionV3 weights' description, from this module's constants as they are now."""
    return weights_fetch.WeightsSpec(
        network="InceptionV3", label="Inception weights", flag="--inception-weights", weights_env=WEIGHTS_ENV,
        url_env=URL_ENV, default_url=DEFAULT_URL, cache_names=(TORCH_FIDELITY_NAME, PYTORCH_FID_NAME),
        example_name=TORCH_FIDELITY_NAME, download_command="genvision download-weights inception",
        max_size=MAX_OTHER_SIZE, official_label="the official FID InceptionV3", official_sha256=OFFICIAL_SHA256,
        official_size=OFFICIAL_SIZE, require_prefix=True, timeout_s=TIMEOUT_S, deadline_s=DEADLINE_S)


def weights_url() -> str:
    return weights_fetch.weights_url(spec())


def expected_digest_ok(name: str, digest: str) -> bool:
    """`digest` starts with the prefix in `name`; under the official prefix it must be the official digest."""
    return weights_fetch.expected_digest_ok(spec(), name, digest)


def size_bound(name: str) -> int:
    """The most bytes a download saved as `name` may have: exactly `OFFICIAL_SIZE` under the official hash prefix,
    `MAX_OTHER_SIZE` under any other."""
    return weights_fetch.size_bound(spec(), name)


def cache_candidates() -> list[Path]:
    """The cache files looked for, in order: the configured URL's file name, torch-fidelity's, pytorch-fid's."""
    return weights_fetch.cache_candidates(spec())


def fixes() -> str:
    return weights_fetch.fixes(spec())


def check_cached(path: Path) -> InceptionWeights:
    return weights_fetch.check_cached(spec(), path)


def given_file(path: str | Path, origin: str, warn: bool = True) -> InceptionWeights:
    return weights_fetch.given_file(spec(), path, origin, warn)


def find(explicit: str | Path = "", warn: bool = True) -> InceptionWeights | None:
    """`weights_fetch.find` for InceptionV3: ``--inception-weights``, ``$GENVISION_INCEPTION_WEIGHTS``, the cache."""
    return weights_fetch.find(spec(), explicit, warn)


def resolve(explicit: str | Path = "", download: bool = False) -> InceptionWeights:
    """`weights_fetch.resolve` for InceptionV3: `find`, then (with `download`) `fetch`; a one-line UsageError
    listing the fixes when nothing is found."""
    return weights_fetch.resolve(spec(), explicit, download)


def fetch(url: str | None = None, *, replace: bool = False) -> InceptionWeights:
    """`weights_fetch.fetch` for InceptionV3: `url` (default ``$GENVISION_INCEPTION_URL`` or `DEFAULT_URL`) into the
    hub cache, verified against the SHA-256 prefix in its file name."""
    return weights_fetch.fetch(spec(), url, replace=replace)


def remove_stale_temps(target: Path) -> list[Path]:
    return weights_fetch.remove_stale_temps(spec(), target)
