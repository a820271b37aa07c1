"""Where the InceptionV3 weights of FID come from: found, fetched and verified the way torch.hub does it, but stricter.

The TF-compatible InceptionV3 of the FID papers (the 2015-12-05 TensorFlow graph of Heusel et al. 2017, ported to
PyTorch by pytorch-fid and torch-fidelity) is one 95,628,359-byte state dict, `OFFICIAL_SHA256`, published under two
names: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (`DEFAULT_URL`) and pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``. Either loads into torch-fidelity's network.

`resolve` takes the first of ``--inception-weights``, ``$GENVISION_INCEPTION_WEIGHTS``, the torch hub cache and
(with ``download=True``) a download by `fetch`. A cached or downloaded file is kept only if its SHA-256 starts with
the hex prefix in its file name (torch.hub's ``NAME-<hex>.EXT``), and a download is renamed into place only after
that check, so nothing partial or corrupt is ever left in the cache. A download is bounded: http(s) only (redirects
included), at most `OFFICIAL_SIZE` bytes under the official name (`MAX_OTHER_SIZE` otherwise) and `DEADLINE_S` seconds
in all; what a killed download left behind is removed by the next one (`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from genvision.errors import UsageError
from genvision.fileio import atomic_write, file_sha256

OFFICIAL_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
TORCH_FIDELITY_NAME = "weights-inception-2015-12-05-6726825d.pth"
PYTORCH_FID_NAME = "pt_inception-2015-12-05-6726825d.pth"
DEFAULT_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TORCH_FIDELITY_NAME}"
WEIGHTS_ENV = "GENVISION_INCEPTION_WEIGHTS"
URL_ENV = "GENVISION_INCEPTION_URL"
HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX
MIN_PREFIX = 8  # hex digits: shorter prefixes verify too little
OFFICIAL_SIZE = 95_628_359  # bytes of the official file (both names; same SHA-256)
MAX_OTHER_SIZE = 2 * OFFICIAL_SIZE  # bytes a file under any other name may have: custom weights, generously
TIMEOUT_S = 60.0  # seconds a download may wait for the server on any one read
DEADLINE_S = 30 * 60.0  # seconds a whole download may take (connect, redirects, headers, body) before it is cut


@dataclass(frozen=True)
class InceptionWeights:
    """A resolved weights file: its path, where it came from, and its SHA-256."""

    path: Path
    origin: str  # "--inception-weights", "$GENVISION_INCEPTION_WEIGHTS", "cache" or "download"
    sha256: str

    @property
    def official(self) -> bool:
        return self.sha256 == OFFICIAL_SHA256


def weights_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: where torch.hub, pytorch-fid and torch-fidelity keep weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def url_file_name(url: str) -> str:
    return os.path.basename(urllib.parse.urlparse(url).path)


def hash_prefix(name: str) -> str:
    """The SHA-256 hex prefix a file name carries (``NAME-<hex>.EXT``), or "" when it carries none."""
    match = HASH_PREFIX.search(name)
    return match.group(1) if match and len(match.group(1)) >= MIN_PREFIX else ""


def expected_digest_ok(name: str, digest: str) -> bool:
    """`digest` starts with the prefix in `name`; under the official prefix it must be the official digest."""
    prefix = hash_prefix(name)
    if not prefix or not digest.startswith(prefix):
        return False
    return digest == OFFICIAL_SHA256 if OFFICIAL_SHA256.startswith(prefix) else True


def size_bound(name: str) -> int:
    """The most bytes a download saved as `name` may have: exactly `OFFICIAL_SIZE` under the official hash prefix
    (only the official digest passes there), `MAX_OTHER_SIZE` under any other."""
    prefix = hash_prefix(name)
    return OFFICIAL_SIZE if prefix and OFFICIAL_SHA256.startswith(prefix) else MAX_OTHER_SIZE


def check_http_url(url: str, where: str) -> None:
    """A one-line UsageError unless `url` is http:// or https:// (no file:, ftp:, data: or bare path)."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise UsageError(f"{where} {url}: expected an http:// or https:// URL, not "
                         f"{scheme + ':' if scheme else 'a path'}; nothing was downloaded")


def cache_candidates() -> list[Path]:
    """The cache files looked for, in order: the configured URL's file name, torch-fidelity's, pytorch-fid's."""
    names = [url_file_name(weights_url()), TORCH_FIDELITY_NAME, PYTORCH_FID_NAME]
    folder = cache_dir()
    return [folder / name for name in dict.fromkeys(name for name in names if name)]


def fixes() -> str:
    return ("add --download to fetch them (or run `genvision download-weights inception` where there is internet; "
            f"${URL_ENV} names a mirror), pass --inception-weights PATH or set ${WEIGHTS_ENV}")


_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """`fileio.file_sha256`, remembered per (path, size, mtime) for this process: choosing the extractor and then
    loading it would otherwise hash the same 95 MB twice."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def check_cached(path: Path) -> InceptionWeights:
    """A cache hit, verified against the prefix in its name; a one-line UsageError naming the file otherwise."""
    digest = sha256_of(path)
    if not expected_digest_ok(path.name, digest):
        raise UsageError(f"cached Inception weights {path} fail their hash check (SHA-256 {digest[:16]}..., expected "
                         f"{hash_prefix(path.name) or 'a NAME-<hex>.pth prefix'}...): the file is corrupt or partial; "
                         f"delete it and run `genvision download-weights inception` (or add --download)")
    return InceptionWeights(path, "cache", digest)


def given_file(path: str | Path, origin: str, warn: bool = True) -> InceptionWeights:
    """A user-named weights file: must exist; its hash is recorded, and a non-official file is a warning (with
    `warn`)."""
    path = Path(path)
    where = f"{origin} {path}" if origin.startswith("--") else f"{origin}={path}"
    if not path.exists():
        raise UsageError(f"{where} does not exist (expected an InceptionV3 state dict such as {TORCH_FIDELITY_NAME})")
    if not path.is_file():
        raise UsageError(f"{where} is not a file")
    digest = sha256_of(path)
    if digest != OFFICIAL_SHA256 and warn:
        print(f"warning: {where} is not the official FID InceptionV3 (SHA-256 {digest[:16]}..., official "
              f"{OFFICIAL_SHA256[:16]}...): its FIDs compare only with statistics made from the same file",
              file=sys.stderr)
    return InceptionWeights(path, origin, digest)


def find(explicit: str | Path = "", warn: bool = True) -> InceptionWeights | None:
    """Steps 1-3 of `resolve` (no network): the weights, None when nowhere, a UsageError when unusable;
    `warn`: say when a user-named file is not the official one."""
    if explicit:
        return given_file(explicit, "--inception-weights", warn)
    if os.environ.get(WEIGHTS_ENV):
        return given_file(os.environ[WEIGHTS_ENV], f"${WEIGHTS_ENV}", warn)
    for path in cache_candidates():
        if path.is_file():
            return check_cached(path)
    return None


def resolve(explicit: str | Path = "", download: bool = False) -> InceptionWeights:
    """The weights file to use, or a one-line UsageError listing the fixes. First hit wins:

    1. `explicit` (``--inception-weights PATH``), then 2. ``$GENVISION_INCEPTION_WEIGHTS``: loaded as given; a file
       that is not the official one is a warning (custom weights are legitimate), never an error;
    3. the torch hub cache, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``), under the file name
       of ``$GENVISION_INCEPTION_URL`` (default `DEFAULT_URL`), then torch-fidelity's name, then pytorch-fid's;
    4. only with `download`: fetched from ``$GENVISION_INCEPTION_URL`` into that cache, with a progress bar.

    A cache file must pass its hash check (`expected_digest_ok`): the SHA-256 prefix in its name, and the whole
    official digest under the official prefix.
    """
    try:
        found = find(explicit)
    except UsageError as error:
        if not download or explicit or os.environ.get(WEIGHTS_ENV):
            raise
        print(f"note: {error}; downloading a fresh copy", file=sys.stderr)
        return fetch(replace=True)
    if found is not None:
        return found
    if download:
        return fetch()
    looked = ", ".join(str(path) for path in cache_candidates())
    raise UsageError(f"no InceptionV3 weights found (looked for --inception-weights, ${WEIGHTS_ENV} and {looked}): "
                     f"{fixes()}")


def fetch(url: str | None = None, *, replace: bool = False) -> InceptionWeights:
    """Download `url` (default ``$GENVISION_INCEPTION_URL`` or `DEFAULT_URL`) into the hub cache, verified.

    The file lands under the URL's file name, whose hash prefix it must match; an existing verified file is kept
    (no download), an existing corrupt one is replaced only when `replace` (``download-weights``) or refused.
    Bytes stream into a temp file beside the target and are renamed only after the check; on any failure the temp
    file and the folders this call created are removed. Only http(s) URLs are fetched, redirects included; a body
    past `size_bound` or a download past `DEADLINE_S` is refused (`_download`), and temp files a killed download of
    the same name left behind are removed first (`remove_stale_temps`).
    """
    where = "--url" if url else f"${URL_ENV}" if os.environ.get(URL_ENV) else "the default URL"
    url = url or weights_url()
    check_http_url(url, where)
    name = url_file_name(url)
    if not hash_prefix(name):
        raise UsageError(f"${URL_ENV} {url}: its file name {name!r} carries no SHA-256 prefix (torch.hub's "
                         f"NAME-<hex>.pth convention, e.g. {TORCH_FIDELITY_NAME}), so the download could not be "
                         "verified; name the mirrored file like the original")
    folder = cache_dir()
    target = folder / name
    if target.is_file():
        try:
            return check_cached(target)
        except UsageError:
            if not replace:
                raise
            print(f"note: replacing the corrupt cached file {target}", file=sys.stderr)
    created = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temps(target):
            print(f"note: removed {stale}, left by an earlier download that did not finish", file=sys.stderr)
        digest = _download(url, folder, target)
    except BaseException:
        for parent in created:  # deepest first; only folders this call made, and only when left empty
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    return InceptionWeights(target, "download", digest)


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temp files an earlier download of `target` left when it was killed (SIGKILL, power loss): fileio's
    ``.NAME.<random>.tmp`` beside it, last written more than `DEADLINE_S` + `TIMEOUT_S` ago. No live download can own
    such a file, since each is cut at its deadline; a younger one may be another process's download and is kept.
    Returns the files removed."""
    removed = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - path.lstat().st_mtime > DEADLINE_S + TIMEOUT_S:
                path.unlink()
                removed.append(path)
    return removed


class _Watchdog:
    """The overall deadline of one download: a timer that, when `seconds` pass, shuts down the TCP connection of
    every socket the download opened, so a stalled TLS handshake, header or body read returns at once instead of
    waiting out its per-read timeout (`expired` is then set). It holds a duplicate of each socket (`track`), which
    reaches the connection whatever wraps or drops the original (TLS, urllib once the headers are in)."""

    def __init__(self, seconds: float):
        self.expired = threading.Event()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        for sock in self._sockets:
            sock.close()

    def track(self, sock: socket.socket) -> socket.socket:
        """Watch `sock`'s connection (through a duplicate); returns `sock`."""
        self._sockets.append(sock.dup())
        if self.expired.is_set():  # opened after the cut (a redirect): cut at once
            self._shutdown(self._sockets[-1])
        return sock

    def _cut(self) -> None:
        self.expired.set()
        for sock in list(self._sockets):
            self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # closed already: nothing to cut
            sock.shutdown(socket.SHUT_RDWR)


class _Tracked:
    """Mixin for urllib's HTTP(S) handlers: the TCP socket of every connection they open goes to the download's
    watchdog as soon as it connects (before any TLS handshake)."""

    def __init__(self, watchdog: _Watchdog):
        super().__init__()
        self.watchdog = watchdog

    def do_open(self, http_class, req, **kwargs):
        watchdog = self.watchdog

        def connection(host, **connection_kwargs):
            opened = http_class(host, **connection_kwargs)
            create = opened._create_connection  # http.client's hook for socket.create_connection
            opened._create_connection = lambda *args, **kw: watchdog.track(create(*args, **kw))
            return opened

        return super().do_open(connection, req, **kwargs)


class _TrackedHTTPHandler(_Tracked, urllib.request.HTTPHandler):
    pass


class _TrackedHTTPSHandler(_Tracked, urllib.request.HTTPSHandler):
    pass


class _HTTPOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects (which would follow ftp:, and refuse file: in an HTTPError), refused in one line for any
    target that is not http(s)."""

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urllib.parse.urljoin(req.full_url, location)
            if urllib.parse.urlparse(target).scheme not in ("http", "https"):
                fp.close()
                check_http_url(target, f"{req.full_url} redirects to")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's default opener (proxies from the environment included) without its ftp:, file: and data: handlers,
    with http(s)-only redirects and every connection tracked by `watchdog`."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), _TrackedHTTPHandler(watchdog),
                    _TrackedHTTPSHandler(watchdog), urllib.request.HTTPDefaultErrorHandler(), _HTTPOnlyRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _download(url: str, folder: Path, target: Path) -> str:
    """Stream `url` into `target` through `fileio.atomic_write` (a temp file beside it, renamed only when the block
    ends without error), hashing as it goes; a hash that does not fit the name raises inside the block, so the
    temp file is removed and `target` never appears. Refused, with nothing kept: a ``Content-Length`` above
    `size_bound` (before any byte is read), a body that grows past it (no byte past it is written), and a download
    still running after `DEADLINE_S`. Returns the digest."""
    from tqdm import tqdm

    bound = size_bound(target.name)
    digest = hashlib.sha256()
    received = 0
    with _Watchdog(DEADLINE_S) as watchdog:

        def past_deadline() -> UsageError:
            return UsageError(f"download of {url} passed its deadline of {DEADLINE_S:g} s ({received} bytes in); "
                              f"nothing was kept in {folder}: try again, or fetch the file elsewhere and pass "
                              "--inception-weights PATH")

        try:
            response = _opener(watchdog).open(urllib.request.Request(url, headers={"User-Agent": "genvision"}),
                                              timeout=TIMEOUT_S)
        except UsageError:
            raise
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
            if watchdog.expired.is_set():
                raise past_deadline() from None
            reason = getattr(error, "reason", None) or error
            raise UsageError(f"cannot download InceptionV3 weights from {url} ({reason}); check the network or "
                             f"${URL_ENV}, or pass --inception-weights PATH") from None
        with response:
            length = response.length  # the parsed Content-Length; None when absent, invalid or chunked
            if length is not None and length > bound:
                raise UsageError(f"{url} announces {length} bytes (Content-Length), more than the {bound} expected "
                                 f"for {target.name}; nothing was downloaded")
            with atomic_write(target, "wb") as handle, tqdm(total=length or None, unit="B", unit_scale=True,
                                                            unit_divisor=1024, desc=f"downloading {target.name}",
                                                            file=sys.stderr, disable=None) as bar:
                try:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        if received + len(block) > bound:
                            raise UsageError(f"{url} sent more than the {bound} bytes expected for {target.name}; "
                                             f"stopped, nothing was kept in {folder}")
                        received += len(block)
                        handle.write(block)
                        digest.update(block)
                        bar.update(len(block))
                        if watchdog.expired.is_set():
                            break
                except (OSError, http.client.HTTPException) as error:
                    if not watchdog.expired.is_set():
                        raise UsageError(f"download of {url} broke off ({error}); nothing was kept, try again") \
                            from None
                if watchdog.expired.is_set():
                    raise past_deadline()
                hexdigest = digest.hexdigest()
                if not expected_digest_ok(target.name, hexdigest):
                    raise UsageError(f"downloaded {url} has SHA-256 {hexdigest[:16]}..., which does not match the "
                                     f"prefix {hash_prefix(target.name)} in its name; the server sent wrong or "
                                     f"corrupt bytes and nothing was kept in {folder}")
    return hexdigest
