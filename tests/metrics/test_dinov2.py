"""FD-DINOv2: timm's DINOv2 with Meta's checkpoint layout converted, its weights found, fetched and verified like
Inception's (flag, environment variable, hub cache, --download from 127.0.0.1), the preprocessing, the protocol
line and statistics metadata, and one-line refusals. All offline: random ViT-S/14 weights saved as Meta saves them."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import numpy as np
import pytest
import torch

from genvision.errors import UsageError
from genvision.metrics import dinov2, weights_fetch
from helpers import (assert_one_line_error, cached, cli, hub_checkpoints, noise_images, run_genvision,
                     serve_files, snapshot, subprocess_env, write_pngs)

pytest.importorskip("timm")

MODEL = "vits14"
OFFICIAL_NAME = "dinov2_vits14_pretrain.pth"


@pytest.fixture(scope="module")
def meta_weights(tmp_path_factory):
    """Random ViT-S/14 weights in Meta's layout (518-px position embeddings, a mask_token), 88 MB."""
    path = tmp_path_factory.mktemp("dinov2") / "dinov2-random.pth"
    dinov2.save_random_weights(path, MODEL, seed=0)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two tiny PNG folders: 3 gray 28-px noise images (padded to 32 px on the way) and 3 RGB 32-px ones."""
    root = tmp_path_factory.mktemp("dinov2-images")
    write_pngs(noise_images(3, seed=0, size=28), root / "a")
    write_pngs(noise_images(3, seed=1, channels=3), root / "b")
    return root / "a", root / "b"


def hashed_name(path) -> str:
    """torch.hub's NAME-<hex>.pth for the bytes of `path`, with Meta's stem."""
    return f"dinov2_{MODEL}_pretrain-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pth"


# ---------------------------------------------------------------------------------------------------------------
# The network.


def test_position_embeddings_are_resampled_as_meta_does_at_224px():
    grid = torch.randn(1, 1 + 37 * 37, 8)
    assert dinov2.resample_position_embeddings(grid, 37) is grid  # 518 px: Meta uses them as they are
    resampled = dinov2.resample_position_embeddings(grid, 16)
    assert resampled.shape == (1, 1 + 16 * 16, 8)
    torch.testing.assert_close(resampled[:, 0], grid[:, 0])  # the CLS token's embedding is not resampled
    constant = torch.full((1, 1 + 37 * 37, 2), 0.25)
    torch.testing.assert_close(dinov2.resample_position_embeddings(constant, 16), torch.full((1, 257, 2), 0.25))
    # Meta's interpolate_pos_encoding: bicubic by the scale factor (16 + 0.1) / 37, no antialiasing.
    patches = grid[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    meta = torch.nn.functional.interpolate(patches, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic")
    torch.testing.assert_close(resampled[:, 1:], meta.permute(0, 2, 3, 1).reshape(1, 256, 8), rtol=0, atol=0)


def test_meta_checkpoint_converts_into_timm_network(meta_weights):
    state = torch.load(meta_weights, weights_only=True)
    assert "mask_token" in state and state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    network = dinov2.load_network(MODEL, state, "test weights")
    assert network.num_features == 384 and network.pos_embed.shape == (1, 257, 384)
    torch.testing.assert_close(network.blocks[3].attn.qkv.weight, state["blocks.3.attn.qkv.weight"])
    assert not any(parameter.requires_grad for parameter in network.parameters())
    del state["blocks.11.mlp.fc2.bias"]
    with pytest.raises(UsageError, match="does not fit timm's DINOv2 ViT-S/14.*blocks.11.mlp.fc2.bias"):
        dinov2.load_network(MODEL, state, "test weights")


def test_extractor_preprocessing_and_chunks(meta_weights, monkeypatch):
    from genvision.imageconv import to_model_range
    from genvision.metrics.extractors import IMAGENET_RESIZE, Dinov2Extractor

    extractor = Dinov2Extractor.load(MODEL, meta_weights)
    assert (extractor.extractor_id, extractor.input_size, extractor.input_channels) == ("dinov2-vits14", 224, 3)
    assert extractor.num_features == 384 and extractor.resize == IMAGENET_RESIZE and not extractor.resizes_internally
    pixels = torch.randint(0, 256, (5, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        features = extractor.features(to_model_range(pixels))
        mean = torch.tensor(dinov2.IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(dinov2.IMAGENET_STD).view(1, 3, 1, 1)
        expected = extractor.network(((pixels.float() / 255) - mean) / std)  # ToTensor + Normalize; CLS token
        monkeypatch.setattr(Dinov2Extractor, "forward_chunk", 2)
        chunked = extractor.features(to_model_range(pixels))
    assert features.shape == (5, 384)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, features, rtol=1e-5, atol=1e-5)
    assert features.std(dim=0).mean() > 1e-3
    with pytest.raises(ValueError, match="expects float"):
        extractor.features(torch.zeros(2, 3, 32, 32))


# ---------------------------------------------------------------------------------------------------------------
# Where the weights come from.


def test_resolution_order(home, tmp_path, monkeypatch, meta_weights):
    spec = dinov2.weights_spec(MODEL)
    assert weights_fetch.find(spec) is None
    with pytest.raises(UsageError, match="no DINOv2 ViT-S/14 weights found.*--download.*--dinov2-weights"):
        weights_fetch.resolve(spec)
    # Meta's name carries no SHA-256 prefix: found, its digest recorded, nothing to check it against.
    official = cached(home, meta_weights, OFFICIAL_NAME)
    found = weights_fetch.find(spec)
    assert (found.path, found.origin, found.official) == (official, "cache", False)
    assert found.sha256 == hashlib.sha256(meta_weights.read_bytes()).hexdigest()
    # The URL's file name comes first; "{model}" in $GENVISION_DINOV2_URL names the size.
    name = hashed_name(meta_weights)
    monkeypatch.setenv("GENVISION_DINOV2_URL", "http://127.0.0.1:9/" + name.replace(MODEL, "{model}"))
    first = cached(home, meta_weights, name)
    assert weights_fetch.find(dinov2.weights_spec(MODEL)).path == first
    explicit = tmp_path / "custom.pth"
    shutil.copyfile(meta_weights, explicit)
    monkeypatch.setenv("GENVISION_DINOV2_WEIGHTS", str(explicit))
    assert weights_fetch.find(spec).origin == "$GENVISION_DINOV2_WEIGHTS"
    assert (weights_fetch.find(spec, first).path, weights_fetch.find(spec, first).origin) == (first, "--dinov2-weights")
    monkeypatch.setenv("GENVISION_DINOV2_WEIGHTS", str(tmp_path / "gone.pth"))
    with pytest.raises(UsageError, match=r"\$GENVISION_DINOV2_WEIGHTS=.*gone.pth does not exist.*dinov2_vits14"):
        weights_fetch.find(spec)


@pytest.mark.slow
def test_download_then_fid_end_to_end(home, folders, monkeypatch, meta_weights):
    """--download fetches the served file (its name's SHA-256 prefix checked) into a temp $TORCH_HOME; then `genvision
    fid --features dinov2` runs as a subprocess, and again offline, with the same FID and a protocol line that says
    how images reached the network and that the digest was not checked against an official one."""
    name = hashed_name(meta_weights)
    digest = hashlib.sha256(meta_weights.read_bytes()).hexdigest()
    flags = ["--features", "dinov2", "--dinov2-model", MODEL]
    with serve_files({f"/{name}": meta_weights.read_bytes()}) as (url, requested):
        env = subprocess_env(TORCH_HOME=str(home), GENVISION_DINOV2_URL=f"{url}/{name.replace(MODEL, '{model}')}")
        proc = run_genvision("fid", *folders, *flags, "--download", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert requested == [f"/{name}"]
    assert sorted(path.name for path in hub_checkpoints(home).iterdir()) == [name]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("FID ") and "(dinov2 features, 3 vs 3 images)" in lines[0]
    assert lines[1] == (f"protocol: dinov2-vits14 {digest[:12]} (SHA-256 not checked against an official digest); "
                        "pad28+bicubic-antialias+imagenet-norm to 224 px, /255 and ImageNet mean/std, CLS token of "
                        f"the final norm; {folders[0]}: N=3, 28 px, 1-channel repeated to 3; {folders[1]}: N=3, 32 px, "
                        "as is")
    monkeypatch.setenv("GENVISION_DINOV2_URL", f"http://127.0.0.1:9/{name}")  # offline: a closed port
    code, out, err = cli("fid", *folders, *flags, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["extractor"] == "dinov2-vits14" and report["extractor_hash"] == digest
    assert report["protocol"]["weights_check"] == "SHA-256 not checked against an official digest"
    assert f"{report['fid']:.2f}" == lines[0].split()[1]


def test_flag_and_environment_variable_record_the_file(home, folders, tmp_path, monkeypatch, meta_weights):
    from genvision.metrics.statsfile import load_stats

    digest = hashlib.sha256(meta_weights.read_bytes()).hexdigest()
    by_flag, by_env = tmp_path / "flag.npz", tmp_path / "env.npz"
    code, out, err = cli("stats", folders[0], "--output", by_flag, "--features", "dinov2", "--dinov2-model", MODEL,
                         "--dinov2-weights", meta_weights)
    assert code == 0, err
    assert "(dinov2-vits14@" in out.splitlines()[0] and out.splitlines()[1].startswith("protocol: dinov2-vits14")
    monkeypatch.setenv("GENVISION_DINOV2_WEIGHTS", str(meta_weights))
    code, _, err = cli("stats", folders[0], "--output", by_env, "--features", "dinov2", "--dinov2-model", MODEL)
    assert code == 0, err
    (mu, sigma, meta), (mu_env, sigma_env, meta_env) = load_stats(by_flag), load_stats(by_env)
    assert (meta.extractor, meta.extractor_hash, meta.image_size, meta.image_channels) == (
        "dinov2-vits14", digest, 224, 3)
    assert (meta.resize, meta.channel_handling, meta.source_size, meta.num_samples) == (
        "pad28+bicubic-antialias+imagenet-norm", "1-channel repeated to 3", 28, 3)
    assert mu.shape == (384,) and meta_env == meta
    np.testing.assert_array_equal(mu, mu_env)
    np.testing.assert_array_equal(sigma, sigma_env)


def test_statistics_refuse_other_features_and_auto_follows_them(home, folders, tmp_path, classifier_file,
                                                                  meta_weights):
    stats = tmp_path / "b.npz"
    code, _, err = cli("stats", folders[1], "--output", stats, "--features", "dinov2", "--dinov2-model", MODEL,
                       "--dinov2-weights", meta_weights)
    assert code == 0, err
    code, _, err = cli("fid", folders[0], stats, "--features", "classifier", "--classifier", classifier_file)
    assert_one_line_error(code, err, "computed with extractor dinov2-vits14@", "this run uses classifier@",
                          command="fid")
    code, out, err = cli("fid", folders[0], stats, "--dinov2-model", MODEL, "--dinov2-weights", meta_weights, "--json")
    assert code == 0, err  # --features auto: the extractor of the statistics file
    assert json.loads(out)["features"] == "dinov2"
    other = tmp_path / "other.pth"
    dinov2.save_random_weights(other, MODEL, seed=1)
    code, _, err = cli("fid", folders[0], stats, "--features", "dinov2", "--dinov2-model", MODEL,
                       "--dinov2-weights", other)
    assert_one_line_error(code, err, "computed with extractor dinov2-vits14@", command="fid")


# ---------------------------------------------------------------------------------------------------------------
# Refusals, each in one line.


def test_corrupt_or_truncated_files_are_refused(home, folders, tmp_path, monkeypatch, meta_weights):
    truncated = meta_weights.read_bytes()[: 1 << 20]
    cached(home, meta_weights, OFFICIAL_NAME).write_bytes(truncated)
    before = snapshot(home)
    code, out, err = cli("fid", *folders, "--features", "dinov2", "--dinov2-model", MODEL)
    assert_one_line_error(code, err, OFFICIAL_NAME, "not a torch state dict", "corrupt or partial",
                          "download-weights dinov2 --dinov2-model vits14", command="fid")
    assert out == "" and snapshot(home) == before
    (tmp_path / "bad.pth").write_bytes(truncated)
    code, _, err = cli("fid", *folders, "--features", "dinov2", "--dinov2-model", MODEL,
                       "--dinov2-weights", tmp_path / "bad.pth")
    assert_one_line_error(code, err, "--dinov2-weights", "bad.pth", "not a torch state dict", command="fid")
    wrong_model = tmp_path / "inception-like.pth"
    torch.save({"conv.weight": torch.zeros(2)}, wrong_model)
    code, _, err = cli("fid", *folders, "--features", "dinov2", "--dinov2-model", MODEL,
                       "--dinov2-weights", wrong_model)
    assert_one_line_error(code, err, "does not fit timm's DINOv2 ViT-S/14", command="fid")
    # A cached file under a hashed name (the URL's, looked for first) whose bytes do not match it.
    name = hashed_name(meta_weights)
    cached(home, tmp_path / "bad.pth", name)
    monkeypatch.setenv("GENVISION_DINOV2_URL", f"http://127.0.0.1:9/{name}")
    code, _, err = cli("fid", *folders, "--features", "dinov2", "--dinov2-model", MODEL)
    assert_one_line_error(code, err, f"cached DINOv2 ViT-S/14 weights {hub_checkpoints(home) / name} fail their hash "
                          "check", "download-weights dinov2", command="fid")


def test_download_weights_command(home, tmp_path, monkeypatch, meta_weights):
    payload = meta_weights.read_bytes()
    name = hashed_name(meta_weights)
    with serve_files({f"/{OFFICIAL_NAME}": payload, f"/{name}": payload[:-1] + b"x"}) as (url, requested):
        monkeypatch.setenv("GENVISION_DINOV2_URL", url + "/dinov2_{model}_pretrain.pth")
        code, out, err = cli("download-weights", "dinov2", "--dinov2-model", MODEL)
        assert code == 0, err
        assert out.startswith(f"downloaded {hub_checkpoints(home) / OFFICIAL_NAME} ({len(payload)} bytes")
        assert "DINOv2 ViT-S/14, SHA-256 not checked against an official digest" in out
        assert "$GENVISION_DINOV2_WEIGHTS" in out
        code, out, err = cli("download-weights", "dinov2", "--dinov2-model", MODEL)  # cached: no second request
        assert code == 0 and out.startswith("already cached: ") and requested == [f"/{OFFICIAL_NAME}"]
        code, out, err = cli("download-weights", "dinov2", "--dinov2-model", MODEL, "--url", f"{url}/{name}")
        assert_one_line_error(code, err, "SHA-256", "does not match the prefix", "nothing was kept",
                              command="download-weights")
    assert sorted(path.name for path in hub_checkpoints(home).iterdir()) == [OFFICIAL_NAME]
    hub_checkpoints(home).joinpath(OFFICIAL_NAME).write_bytes(payload[: 1 << 20])
    code, _, err = cli("download-weights", "dinov2", "--dinov2-model", MODEL)
    assert_one_line_error(code, err, OFFICIAL_NAME, "corrupt or partial", command="download-weights")


def test_download_is_bounded_by_the_model_size(home, monkeypatch):
    assert dinov2.weights_spec("vitl14").max_size == 2 * 4 * 304_368_640  # twice ViT-L/14's float32 bytes
    monkeypatch.setattr(dinov2.Dinov2Model, "max_size", property(lambda self: 1 << 10))
    with serve_files({f"/{OFFICIAL_NAME}": bytes(2 << 10)}) as (url, _):
        code, out, err = cli("download-weights", "dinov2", "--dinov2-model", MODEL, "--url", f"{url}/{OFFICIAL_NAME}")
    assert_one_line_error(code, err, f"announces {2 << 10} bytes", str(1 << 10), "nothing was downloaded",
                          command="download-weights")
    assert not home.exists()


def test_missing_timm_is_one_line_naming_the_extra(home, folders, monkeypatch, meta_weights):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    code, out, err = cli("fid", *folders, "--features", "dinov2", "--dinov2-model", MODEL,
                         "--dinov2-weights", meta_weights)
    assert_one_line_error(code, err, "--features dinov2 needs timm", "pip install 'genvision[dinov2]'", command="fid")
    assert out == ""
