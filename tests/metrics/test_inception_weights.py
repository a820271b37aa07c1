"""InceptionV3 weights: the resolution order, torch.hub's hash-prefix check, downloads from a loopback server, a
corrupt cache, `genvision download-weights`, ``--features auto``, and hostile downloads (oversized, endless or slow
bodies, non-HTTP(S) URLs and redirects, a killed download's temp file). All offline (random weights, 127.0.0.1)."""

import base64
import contextlib
import hashlib
import json
import os
import select
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from genvision.errors import UsageError
from genvision.metrics import inception_weights as weights
from helpers import (CLOSED_PORT_URL, assert_one_line_error, cached, cli, hub_checkpoints, named_by_hash,
                     noise_images, serve_files, snapshot, write_pngs)

pytest.importorskip("torch_fidelity")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two tiny PNG folders: 3 gray noise images and 3 RGB ones (32 px)."""
    root = tmp_path_factory.mktemp("inception-images")
    write_pngs(noise_images(3, seed=0), root / "a")
    write_pngs(noise_images(3, seed=1, channels=3), root / "b")
    return root / "a", root / "b"


def test_hash_prefix_follows_torch_hub():
    assert weights.hash_prefix(weights.TORCH_FIDELITY_NAME) == weights.hash_prefix(weights.PYTORCH_FID_NAME) == "6726825d"
    assert weights.OFFICIAL_SHA256.startswith("6726825d")
    assert weights.hash_prefix("inception.pth") == "" and weights.hash_prefix("w-abc12.pth") == ""  # none / too short
    assert weights.expected_digest_ok("w-abcdef12.pth", "abcdef12" + "0" * 56)
    assert not weights.expected_digest_ok("w-abcdef12.pth", "abcdef13" + "0" * 56)
    # Under the official prefix only the official digest passes, not merely its first 8 digits.
    assert weights.expected_digest_ok(weights.TORCH_FIDELITY_NAME, weights.OFFICIAL_SHA256)
    assert not weights.expected_digest_ok(weights.TORCH_FIDELITY_NAME, "6726825d" + "0" * 56)


def test_resolution_order(home, tmp_path, monkeypatch, inception_weights):
    name = named_by_hash(inception_weights)
    assert weights.find() is None
    with pytest.raises(UsageError, match="--download"):
        weights.resolve()
    # The cache names, in order: the URL's file name, then torch-fidelity's, then pytorch-fid's (here renamed to
    # names that carry this file's own prefix, since only the real download has the official bytes).
    monkeypatch.setattr(weights, "PYTORCH_FID_NAME", "pt_" + name)
    third = cached(home, inception_weights, "pt_" + name)
    assert weights.find().path == third and weights.find().origin == "cache"
    monkeypatch.setattr(weights, "TORCH_FIDELITY_NAME", "tf_" + name)
    second = cached(home, inception_weights, "tf_" + name)
    assert weights.find().path == second
    monkeypatch.setenv("GENVISION_INCEPTION_URL", f"http://127.0.0.1:9/{name}")
    first = cached(home, inception_weights, name)
    assert weights.find().path == first
    # $GENVISION_INCEPTION_WEIGHTS beats the cache, --inception-weights beats both; neither is hash-checked by name.
    explicit = tmp_path / "custom.pth"
    shutil.copyfile(inception_weights, explicit)
    monkeypatch.setenv("GENVISION_INCEPTION_WEIGHTS", str(explicit))
    assert (weights.find().path, weights.find().origin) == (explicit, "$GENVISION_INCEPTION_WEIGHTS")
    assert (weights.find(third).path, weights.find(third).origin) == (third, "--inception-weights")
    monkeypatch.setenv("GENVISION_INCEPTION_WEIGHTS", str(tmp_path / "gone.pth"))
    with pytest.raises(UsageError, match=r"\$GENVISION_INCEPTION_WEIGHTS=.*gone.pth does not exist"):
        weights.find()


def test_download_then_found_offline(home, folders, monkeypatch, inception_weights):
    """(a) --download fetches the served file into the hub cache; a second run finds it with no server at all."""
    name = named_by_hash(inception_weights)
    with serve_files({f"/{name}": inception_weights.read_bytes()}) as (url, requested):
        monkeypatch.setenv("GENVISION_INCEPTION_URL", f"{url}/{name}")
        code, out, err = cli("fid", folders[0], folders[1], "--features", "inception", "--download", "--json")
    assert code == 0, err
    assert requested == [f"/{name}"]
    assert sorted(p.name for p in hub_checkpoints(home).iterdir()) == [name]  # no temp file left
    assert (hub_checkpoints(home) / name).read_bytes() == inception_weights.read_bytes()
    monkeypatch.setenv("GENVISION_INCEPTION_URL", CLOSED_PORT_URL.rsplit("/", 1)[0] + f"/{name}")
    code, again, err = cli("fid", f"folder:{folders[0]}", f"folder:{folders[1]}", "--features", "inception", "--json")
    assert code == 0, err
    assert json.loads(again)["fid"] == json.loads(out)["fid"]
    assert "not the official FID InceptionV3" not in err  # cache hits are verified by name, not warned about


def test_wrong_bytes_are_refused_and_nothing_stays(home, folders, monkeypatch, inception_weights):
    """(b) bytes whose SHA-256 does not fit the name's prefix: one line, exit 2, the cache folder left as it was."""
    name = named_by_hash(inception_weights)
    wrong = inception_weights.read_bytes()[:-1] + b"x"
    with serve_files({f"/{name}": wrong}) as (url, requested):
        monkeypatch.setenv("GENVISION_INCEPTION_URL", f"{url}/{name}")
        code, out, err = cli("fid", folders[0], folders[1], "--features", "inception", "--download")
        assert requested == [f"/{name}"]
    assert_one_line_error(code, err, "SHA-256", "nothing was kept", command="fid")
    assert out == "" and not home.exists()  # the folders the download created are gone too
    hub_checkpoints(home).mkdir(parents=True)
    with serve_files({f"/{name}": wrong}) as (url, _):
        code, out, err = cli("download-weights", "inception", "--url", f"{url}/{name}")
    assert_one_line_error(code, err, name[-12:-4], command="download-weights")
    assert list(hub_checkpoints(home).iterdir()) == []


def test_refused_connection_is_one_line(home, folders):
    """(c) nothing listens at the URL: one line naming it, exit 2, nothing created."""
    code, out, err = cli("fid", folders[0], folders[1], "--features", "inception", "--download")
    assert_one_line_error(code, err, "cannot download", "127.0.0.1:9", "--inception-weights", command="fid")
    assert out == "" and not home.exists()
    code, out, err = cli("download-weights", "inception")
    assert_one_line_error(code, err, "Connection refused", command="download-weights")


def test_corrupt_cached_file_is_refused_and_kept(home, folders, tmp_path):
    corrupt = hub_checkpoints(home) / weights.TORCH_FIDELITY_NAME
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"half a download")
    before = snapshot(home)
    code, out, err = cli("fid", folders[0], folders[1], "--features", "inception")
    assert_one_line_error(code, err, str(corrupt), "corrupt", "download-weights", command="fid")
    code, _, err = cli("stats", folders[0], "--output", tmp_path / "a.npz", "--features", "inception")
    assert_one_line_error(code, err, str(corrupt), command="stats")
    assert snapshot(home) == before and not (tmp_path / "a.npz").exists()


def test_download_weights_command(home, monkeypatch, inception_weights):
    name = named_by_hash(inception_weights)
    with serve_files({f"/{name}": inception_weights.read_bytes()}, max_requests=2) as (url, requested):
        monkeypatch.setenv("GENVISION_INCEPTION_URL", f"{url}/{name}")
        code, out, err = cli("download-weights", "inception")
        assert code == 0, err
        assert out.startswith(f"downloaded {hub_checkpoints(home) / name} ({inception_weights.stat().st_size} bytes")
        assert "custom weights" in out
        code, out, err = cli("download-weights", "inception")  # verified already: no second request
        assert code == 0, err
        assert out.startswith("already cached and verified:") and requested == [f"/{name}"]
        (hub_checkpoints(home) / name).write_bytes(b"corrupted later")
        code, out, err = cli("download-weights", "inception")  # replaced by a verified copy
        assert code == 0, err
        assert requested == [f"/{name}"] * 2 and "replacing the corrupt cached file" in err
    assert (hub_checkpoints(home) / name).read_bytes() == inception_weights.read_bytes()
    code, _, err = cli("download-weights", "inception", "--url", "http://127.0.0.1:9/inception.pth")
    assert_one_line_error(code, err, "carries no SHA-256 prefix", command="download-weights")


def test_explicit_custom_weights_warn_and_are_recorded(home, folders, tmp_path, inception_weights):
    from genvision.fileio import file_sha256
    from genvision.metrics.statsfile import load_stats

    out_file = tmp_path / "a.npz"
    code, out, err = cli("stats", folders[0], "--output", out_file, "--inception-weights", inception_weights)
    assert code == 0, err  # --features auto: a folder is no mnist5k, and the weights resolve, so Inception
    warnings = [line for line in err.splitlines() if line.startswith("warning: --inception-weights")]
    assert len(warnings) == 1 and "not the official FID InceptionV3" in warnings[0]
    _, _, meta = load_stats(out_file)
    assert (meta.extractor, meta.extractor_hash) == ("inception-v3-compat", file_sha256(inception_weights))
    assert (meta.resize, meta.channel_handling, meta.source_size, meta.num_samples) == (
        "pad28+tf1-bilinear", "1-channel repeated to 3", 32, 3)
    assert out.splitlines()[1].startswith("protocol: inception-v3-compat")


def test_auto_features(home, folders, tmp_path, classifier_file):
    # Folders, no classifier, no weights anywhere: one line with every fix, before any image is read.
    code, _, err = cli("fid", folders[0], folders[1])
    line = assert_one_line_error(code, err, "--download", "--inception-weights", "--classifier", "download-weights",
                                 command="fid")
    assert "GENVISION_INCEPTION_WEIGHTS" in line
    # mnist5k on either side keeps the shipped classifier; --classifier always means the classifier.
    code, out, err = cli("fid", folders[0], "mnist5k:test", "--json")
    assert code == 0, err
    assert '"features": "classifier"' in out
    code, out, err = cli("fid", folders[0], folders[1], "--classifier", classifier_file, "--json")
    assert code == 0, err
    assert '"features": "classifier"' in out


def test_legacy_inception_statistics_are_refused(home, folders, tmp_path, monkeypatch, inception_weights):
    """A stats file of the old protocol (bicubic resize to 299 before the network) is another feature space."""
    from genvision.fileio import file_sha256
    from genvision.metrics.statsfile import StatsMetadata, save_stats

    name = named_by_hash(inception_weights)
    cached(home, inception_weights, name)
    monkeypatch.setenv("GENVISION_INCEPTION_URL", f"http://127.0.0.1:9/{name}")
    old = tmp_path / "old.npz"
    save_stats(old, np.zeros(2048), np.eye(2048), StatsMetadata("inception-v3-compat", file_sha256(inception_weights),
                                                                299, 3, "x", 100, resize="bicubic-antialias"))
    code, _, err = cli("fid", folders[0], old)
    assert_one_line_error(code, err, "bicubic-antialias resize", "pad28+tf1-bilinear resize", command="fid")


# ---------------------------------------------------------------------------------------------------------------
# Hostile downloads: each refused in one line (exit 2) with nothing left in $TORCH_HOME.


def hashed_name(payload: bytes, stem: str = "weights-test") -> str:
    """torch.hub's NAME-<hex>.pth for `payload`."""
    return f"{stem}-{hashlib.sha256(payload).hexdigest()[:8]}.pth"


class Stream:
    """A response for `serve_files`: after `stall_s` seconds of silence (ended early when the client hangs up), a
    200 with a Content-Length of `length` (none when None), then `total` zero bytes in `chunk`-byte writes `pause_s`
    apart, stopping when the client hangs up. `sent`, `completed` and `finished` say what happened."""

    def __init__(self, total: int = 0, length: int | None = None, chunk: int = 1 << 18, pause_s: float = 0.0,
                 stall_s: float = 0.0):
        self.total, self.length, self.chunk, self.pause_s, self.stall_s = total, length, chunk, pause_s, stall_s
        self.sent, self.completed, self.finished = 0, False, threading.Event()

    def __call__(self, handler) -> None:
        try:
            if self.stall_s and select.select([handler.connection], [], [], self.stall_s)[0]:
                return  # the client hung up
            handler.send_response(200)
            if self.length is not None:
                handler.send_header("Content-Length", str(self.length))
            handler.end_headers()
            block = bytes(self.chunk)
            while self.sent < self.total:
                handler.wfile.write(block[:self.total - self.sent])
                self.sent += min(self.chunk, self.total - self.sent)
                time.sleep(self.pause_s)
            self.completed = True
        except OSError:
            pass
        finally:
            self.finished.set()


def redirect(location: str):
    """A response for `serve_files`: 302 to `location`."""
    def respond(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return respond


@contextlib.contextmanager
def counting_listener(timeout_s: float = 30.0):
    """A TCP port on 127.0.0.1 that accepts and at once closes connections (an FTP server that never greets);
    yields (port, list of the connections accepted). Stops with the block or after `timeout_s`."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[tuple] = []
    stop = threading.Event()

    def serve() -> None:
        deadline = time.monotonic() + timeout_s
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                connection, address = server.accept()
                accepted.append(address)
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.mark.parametrize("official", [True, False], ids=["official-name", "other-name"])
def test_oversized_content_length_is_refused_before_reading(home, official):
    name = weights.TORCH_FIDELITY_NAME if official else hashed_name(b"x")
    bound = getattr(weights, "OFFICIAL_SIZE" if official else "MAX_OTHER_SIZE", 95_628_359 * (1 if official else 2))
    stream = Stream(total=64 << 20, length=bound + 1)
    with serve_files({f"/{name}": stream}) as (url, requested):
        code, out, err = cli("download-weights", "inception", "--url", f"{url}/{name}")
        assert stream.finished.wait(20) and requested == [f"/{name}"]
    assert_one_line_error(code, err, f"{url}/{name}", f"announces {bound + 1} bytes (Content-Length)", str(bound),
                          "nothing was downloaded", command="download-weights")
    assert not stream.completed and stream.sent < 32 << 20  # the client hung up instead of reading the body
    assert out == "" and not home.exists()


def test_body_past_the_bound_is_stopped(home, monkeypatch):
    """No Content-Length: the body is read up to the bound (1 MiB here), and refused at the first byte past it."""
    monkeypatch.setattr(weights, "MAX_OTHER_SIZE", 1 << 20, raising=False)
    name = hashed_name(b"x")
    stream = Stream(total=64 << 20)
    with serve_files({f"/{name}": stream}) as (url, _):
        code, out, err = cli("download-weights", "inception", "--url", f"{url}/{name}")
        assert stream.finished.wait(20)
    assert_one_line_error(code, err, f"{url}/{name}", f"sent more than the {1 << 20} bytes", "nothing was kept",
                          command="download-weights")
    assert not stream.completed and stream.sent < 32 << 20
    assert out == "" and not home.exists()


@pytest.mark.parametrize("stall", ["before-headers", "in-body"])
def test_download_past_deadline_is_cut(home, monkeypatch, stall):
    """The overall deadline (1 s here) cuts a server that never answers and one that trickles its body, well before
    their per-read timeouts (10 s here) or their end (10 s)."""
    monkeypatch.setattr(weights, "DEADLINE_S", 1.0, raising=False)
    monkeypatch.setattr(weights, "TIMEOUT_S", 10.0)
    name = hashed_name(b"x")
    stream = Stream(stall_s=10.0) if stall == "before-headers" else Stream(total=1000, length=1000, chunk=1,
                                                                             pause_s=0.01)
    with serve_files({f"/{name}": stream}) as (url, _):
        start = time.monotonic()
        code, out, err = cli("download-weights", "inception", "--url", f"{url}/{name}")
        elapsed = time.monotonic() - start
        assert stream.finished.wait(20)
    assert_one_line_error(code, err, f"{url}/{name}", "passed its deadline of 1 s", "nothing was kept",
                          command="download-weights")
    assert elapsed < 6 and not stream.completed
    assert out == "" and not home.exists()


@pytest.mark.parametrize("origin", ["--url", "$GENVISION_INCEPTION_URL"])
@pytest.mark.parametrize("scheme", ["file", "ftp", "data"])
def test_non_http_urls_are_refused(home, tmp_path, monkeypatch, origin, scheme):
    """file: would copy a local file into the cache, data: would store the URL's own bytes (both pass the hash check
    since the name fits them), ftp: would connect: none is opened."""
    payload = b"weights from elsewhere"
    name = hashed_name(payload)
    (tmp_path / name).write_bytes(payload)
    with counting_listener() as (port, accepted):
        url = {"file": (tmp_path / name).as_uri(), "ftp": f"ftp://127.0.0.1:{port}/{name}",
               "data": f"data:x/{name},{payload.decode()}"}[scheme]
        if origin == "--url":
            code, out, err = cli("download-weights", "inception", "--url", url)
        else:
            monkeypatch.setenv("GENVISION_INCEPTION_URL", url)
            code, out, err = cli("download-weights", "inception")
    assert_one_line_error(code, err, f"{origin} {url}", "expected an http:// or https:// URL", f"not {scheme}:",
                          command="download-weights")
    assert accepted == [] and out == "" and not home.exists()


def test_redirects_only_to_http(home, tmp_path):
    """A redirect to file:, ftp: or data: is refused in one line (urllib itself follows ftp:); one to http: is
    followed."""
    payload = b"weights from elsewhere"
    name = hashed_name(payload)
    (tmp_path / name).write_bytes(payload)
    with counting_listener() as (port, accepted):
        targets = {"ftp": f"ftp://127.0.0.1:{port}/{name}", "file": (tmp_path / name).as_uri(),
                   "data": f"data:application/octet-stream;base64,{base64.b64encode(payload).decode()}"}
        files = {f"/{scheme}/{name}": redirect(target) for scheme, target in targets.items()}
        with serve_files(files) as (url, requested):
            for scheme, target in targets.items():
                code, out, err = cli("download-weights", "inception", "--url", f"{url}/{scheme}/{name}")
                assert accepted == []  # the ftp: target was never contacted
                assert_one_line_error(code, err, f"{url}/{scheme}/{name} redirects to {target}",
                                      "expected an http:// or https:// URL", command="download-weights")
                assert out == "" and not home.exists()
            assert requested == [f"/{scheme}/{name}" for scheme in targets]
    with serve_files({f"/moved/{name}": redirect(f"/{name}"), f"/{name}": payload}) as (url, requested):
        code, out, err = cli("download-weights", "inception", "--url", f"{url}/moved/{name}")
    assert code == 0, err
    assert requested == [f"/moved/{name}", f"/{name}"]
    assert (hub_checkpoints(home) / name).read_bytes() == payload


def test_stale_temp_file_is_removed_by_the_next_download(home):
    """A download killed by SIGKILL leaves fileio's `.NAME.<random>.tmp`; the next download of NAME removes it when
    it is older than any live download can be, and keeps a young one (another process's download in flight) and
    temp files of other names."""
    payload = b"weights from elsewhere"
    name = hashed_name(payload)
    folder = hub_checkpoints(home)
    folder.mkdir(parents=True)
    stale, live, other = folder / f".{name}.k1lled00.tmp", folder / f".{name}.a1ive000.tmp", folder / ".x.pth.y.tmp"
    for path in (stale, live, other):
        path.write_bytes(b"half a download")
    two_days_ago = time.time() - 2 * 86400
    for path in (stale, other):
        os.utime(path, (two_days_ago, two_days_ago))
    with serve_files({f"/{name}": payload}) as (url, _):
        code, out, err = cli("download-weights", "inception", "--url", f"{url}/{name}")
    assert code == 0, err
    assert f"removed {stale}" in err
    assert sorted(path.name for path in folder.iterdir()) == sorted([name, live.name, other.name])
