"""Pretrained weights of the feature networks, found, fetched and verified the way torch.hub does it, but stricter.

One `WeightsSpec` describes a network's weights file: the flag and environment variable that name a local file, the
variable that names a download URL (a mirror) and the default URL, the file names looked for in the torch hub cache,
the official SHA-256 and size when known, and the bounds of a download. `inception_weights` and `dinov2` hold the
specs; this module does the work for any of them.

`resolve` takes the first of the flag, the environment variable, the torch hub cache and (with ``download=True``) a
download by `fetch`. A cached or downloaded file whose name carries a SHA-256 hex prefix (torch.hub's
``NAME-<hex>.EXT``) is kept only if its digest starts with it, and under the official prefix only if it is the whole
official digest; a spec with `require_prefix` refuses names without one (a download could not be verified), one
without accepts them and records the digest unverified. A download is renamed into place only after that check, so
nothing partial or corrupt is ever left in the cache. It is bounded: http(s) only (redirects included), at most the
official size under the official prefix (`WeightsSpec.max_size` otherwise) and `WeightsSpec.deadline_s` seconds in
all; what a killed download left behind is removed by the next one (`remove_stale_temps`).
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
from dataclasses import dataclass, field
from pathlib import Path

from genvision.errors import UsageError
from genvision.fileio import atomic_write, file_sha256

HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX
MIN_PREFIX = 8  # hex digits: shorter prefixes verify too little


@dataclass(frozen=True)
class WeightsSpec:
    """Where one network's weights file is looked for and fetched from, and what it must look like."""

    network: str  # in messages: "InceptionV3", "DINOv2 ViT-L/14"
    label: str  # what a cached file is called in messages: "Inception weights"
    flag: str  # the option naming a local file: "--inception-weights"
    weights_env: str  # the environment variable naming a local file
    url_env: str  # the environment variable naming the download URL (a mirror)
    default_url: str  # the download URL when `url_env` is unset
    cache_names: tuple[str, ...]  # file names looked for in the hub cache after the URL's own
    example_name: str  # a file name shown in messages ("a state dict such as ...")
    download_command: str  # the command that fetches the file: "genvision download-weights inception"
    max_size: int  # bytes a download under any name but the official one may have
    official_label: str = ""  # "the official FID InceptionV3": user files that are not it are a warning
    official_sha256: str = ""  # the official file's whole digest; "" = not known, nothing is checked against it
    official_size: int = 0  # bytes of the official file (the download bound under its prefix); 0 = not known
    require_prefix: bool = True  # cached and downloaded file names must carry a SHA-256 prefix
    model: str = ""  # replaces "{model}" in a URL from `url_env` (one variable for several model sizes)
    timeout_s: float = 60.0  # seconds a download may wait for the server on any one read
    deadline_s: float = 30 * 60.0  # seconds a whole download may take (connect, redirects, headers, body)


@dataclass(frozen=True)
class ResolvedWeights:
    """A resolved weights file: its path, where it came from, and its SHA-256."""

    path: Path
    origin: str  # the flag, "$VARIABLE", "cache" or "download"
    sha256: str
    official_sha256: str = field(default="", repr=False, compare=False)  # the spec's; "" = not known

    @property
    def official(self) -> bool:
        """The file is the official one (False also when no official digest is known)."""
        return bool(self.official_sha256) and self.sha256 == self.official_sha256


def weights_url(spec: WeightsSpec) -> str:
    url = os.environ.get(spec.url_env) or spec.default_url
    return url.replace("{model}", spec.model) if spec.model else url


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


def under_official_prefix(spec: WeightsSpec, name: str) -> bool:
    prefix = hash_prefix(name)
    return bool(prefix and spec.official_sha256 and spec.official_sha256.startswith(prefix))


def expected_digest_ok(spec: WeightsSpec, name: str, digest: str) -> bool:
    """`digest` starts with the prefix in `name` (a name without one passes only when the spec does not
    `require_prefix`); under the official prefix it must be the official digest."""
    prefix = hash_prefix(name)
    if not prefix:
        return not spec.require_prefix
    if not digest.startswith(prefix):
        return False
    return digest == spec.official_sha256 if under_official_prefix(spec, name) else True


def size_bound(spec: WeightsSpec, name: str) -> int:
    """The most bytes a download saved as `name` may have: exactly the official size under the official hash prefix
    (only the official digest passes there), `max_size` under any other."""
    return spec.official_size if under_official_prefix(spec, name) and spec.official_size else spec.max_size


def check_http_url(url: str, where: str) -> None:
    """A one-line UsageError unless `url` is http:// or https:// (no file:, ftp:, data: or bare path)."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise UsageError(f"{where} {url}: expected an http:// or https:// URL, not "
                         f"{scheme + ':' if scheme else 'a path'}; nothing was downloaded")


def cache_candidates(spec: WeightsSpec) -> list[Path]:
    """The cache files looked for, in order: the configured URL's file name, then `cache_names`."""
    names = [url_file_name(weights_url(spec)), *spec.cache_names]
    folder = cache_dir()
    return [folder / name for name in dict.fromkeys(name for name in names if name)]


def fixes(spec: WeightsSpec) -> str:
    return (f"add --download to fetch them (or run `{spec.download_command}` where there is internet; "
            f"${spec.url_env} names a mirror), pass {spec.flag} PATH or set ${spec.weights_env}")


_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """`fileio.file_sha256`, remembered per (path, size, mtime) for this process: choosing the extractor and then
    loading it would otherwise hash the same large file twice."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def check_cached(spec: WeightsSpec, path: Path) -> ResolvedWeights:
    """A cache hit, verified against the prefix in its name; a one-line UsageError naming the file otherwise."""
    digest = sha256_of(path)
    if not expected_digest_ok(spec, path.name, digest):
        raise UsageError(f"cached {spec.label} {path} fail their hash check (SHA-256 {digest[:16]}..., expected "
                         f"{hash_prefix(path.name) or 'a NAME-<hex>.pth prefix'}...): the file is corrupt or partial; "
                         f"delete it and run `{spec.download_command}` (or add --download)")
    return ResolvedWeights(path, "cache", digest, spec.official_sha256)


def given_file(spec: WeightsSpec, path: str | Path, origin: str, warn: bool = True) -> ResolvedWeights:
    """A user-named weights file: must exist; its hash is recorded, and a file that is not the official one is a
    warning (with `warn`, when the spec knows the official digest)."""
    path = Path(path)
    where = f"{origin} {path}" if origin.startswith("--") else f"{origin}={path}"
    if not path.exists():
        raise UsageError(f"{where} does not exist (expected {article(spec.network)} {spec.network} state dict such as "
                         f"{spec.example_name})")
    if not path.is_file():
        raise UsageError(f"{where} is not a file")
    digest = sha256_of(path)
    if spec.official_sha256 and digest != spec.official_sha256 and warn:
        print(f"warning: {where} is not {spec.official_label} (SHA-256 {digest[:16]}..., official "
              f"{spec.official_sha256[:16]}...): its FIDs compare only with statistics made from the same file",
              file=sys.stderr)
    return ResolvedWeights(path, origin, digest, spec.official_sha256)


def article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"


def find(spec: WeightsSpec, explicit: str | Path = "", warn: bool = True) -> ResolvedWeights | None:
    """Steps 1-3 of `resolve` (no network): the weights, None when nowhere, a UsageError when unusable;
    `warn`: say when a user-named file is not the official one."""
    if explicit:
        return given_file(spec, explicit, spec.flag, warn)
    if os.environ.get(spec.weights_env):
        return given_file(spec, os.environ[spec.weights_env], f"${spec.weights_env}", warn)
    for path in cache_candidates(spec):
        if path.is_file():
            return check_cached(spec, path)
    return None


def resolve(spec: WeightsSpec, explicit: str | Path = "", download: bool = False) -> ResolvedWeights:
    """The weights file to use, or a one-line UsageError listing the fixes. First hit wins:

    1. `explicit` (the spec's flag), then 2. the spec's `weights_env`: loaded as given; a file that is not the
       official one is a warning (custom weights are legitimate), never an error;
    3. the torch hub cache, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``), under the file name
       of the URL (`url_env`, default `default_url`), then under each of `cache_names`;
    4. only with `download`: fetched from that URL into that cache, with a progress bar.

    A cache file must pass its hash check (`expected_digest_ok`).
    """
    try:
        found = find(spec, explicit)
    except UsageError as error:
        if not download or explicit or os.environ.get(spec.weights_env):
            raise
        print(f"note: {error}; downloading a fresh copy", file=sys.stderr)
        return fetch(spec, replace=True)
    if found is not None:
        return found
    if download:
        return fetch(spec)
    looked = ", ".join(str(path) for path in cache_candidates(spec))
    raise UsageError(f"no {spec.network} weights found (looked for {spec.flag}, ${spec.weights_env} and {looked}): "
                     f"{fixes(spec)}")


def fetch(spec: WeightsSpec, url: str | None = None, *, replace: bool = False) -> ResolvedWeights:
    """Download `url` (default the spec's `url_env` or `default_url`) into the hub cache, verified.

    The file lands under the URL's file name, whose hash prefix it must match; an existing verified file is kept
    (no download), an existing corrupt one is replaced only when `replace` (``download-weights``) or refused.
    Bytes stream into a temp file beside the target and are renamed only after the check; on any failure the temp
    file and the folders this call created are removed. Only http(s) URLs are fetched, redirects included; a body
    past `size_bound` or a download past the spec's deadline is refused (`_download`), and temp files a killed
    download of the same name left behind are removed first (`remove_stale_temps`).
    """
    where = "--url" if url else f"${spec.url_env}" if os.environ.get(spec.url_env) else "the default URL"
    url = url or weights_url(spec)
    check_http_url(url, where)
    name = url_file_name(url)
    if not hash_prefix(name):
        if spec.require_prefix:
            raise UsageError(f"${spec.url_env} {url}: its file name {name!r} carries no SHA-256 prefix (torch.hub's "
                             f"NAME-<hex>.pth convention, e.g. {spec.example_name}), so the download could not be "
                             "verified; name the mirrored file like the original")
        if not name:
            raise UsageError(f"{where} {url}: the URL names no file; nothing was downloaded")
    folder = cache_dir()
    target = folder / name
    if target.is_file():
        try:
            return check_cached(spec, target)
        except UsageError:
            if not replace:
                raise
            print(f"note: replacing the corrupt cached file {target}", file=sys.stderr)
    created = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temps(spec, target):
            print(f"note: removed {stale}, left by an earlier download that did not finish", file=sys.stderr)
        digest = _download(spec, url, folder, target)
    except BaseException:
        for parent in created:  # deepest first; only folders this call made, and only when left empty
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    return ResolvedWeights(target, "download", digest, spec.official_sha256)


def remove_stale_temps(spec: WeightsSpec, target: Path) -> list[Path]:
    """Remove the temp files an earlier download of `target` left when it was killed (SIGKILL, power loss): fileio's
    ``.NAME.<random>.tmp`` beside it, last written more than the spec's deadline + read timeout ago. No live download
    can own such a file, since each is cut at its deadline; a younger one may be another process's download and is
    kept. Returns the files removed."""
    removed = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - path.lstat().st_mtime > spec.deadline_s + spec.timeout_s:
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


def _download(spec: WeightsSpec, url: str, folder: Path, target: Path) -> str:
    """Stream `url` into `target` through `fileio.atomic_write` (a temp file beside it, renamed only when the block
    ends without error), hashing as it goes; a hash that does not fit the name raises inside the block, so the
    temp file is removed and `target` never appears. Refused, with nothing kept: a ``Content-Length`` above
    `size_bound` (before any byte is read), a body that grows past it (no byte past it is written), and a download
    still running after the spec's `deadline_s`. Returns the digest."""
    from tqdm import tqdm

    bound = size_bound(spec, target.name)
    digest = hashlib.sha256()
    received = 0
    with _Watchdog(spec.deadline_s) as watchdog:

        def past_deadline() -> UsageError:
            return UsageError(f"download of {url} passed its deadline of {spec.deadline_s:g} s ({received} bytes in); "
                              f"nothing was kept in {folder}: try again, or fetch the file elsewhere and pass "
                              f"{spec.flag} PATH")

        try:
            response = _opener(watchdog).open(urllib.request.Request(url, headers={"User-Agent": "genvision"}),
                                              timeout=spec.timeout_s)
        except UsageError:
            raise
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
            if watchdog.expired.is_set():
                raise past_deadline() from None
            reason = getattr(error, "reason", None) or error
            raise UsageError(f"cannot download {spec.network} weights from {url} ({reason}); check the network or "
                             f"${spec.url_env}, or pass {spec.flag} PATH") from None
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
                if not expected_digest_ok(spec, target.name, hexdigest):
                    raise UsageError(f"downloaded {url} has SHA-256 {hexdigest[:16]}..., which does not match the "
                                     f"prefix {hash_prefix(target.name)} in its name; the server sent wrong or "
                                     f"corrupt bytes and nothing was kept in {folder}")
    return hexdigest
