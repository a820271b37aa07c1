"""SOURCE resolution, feature extraction, in-memory vs PNG agreement, and the reference-statistics cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genvision.errors import UsageError
from genvision.imageconv import to_model_range
from genvision.metrics import sources
from genvision.metrics.extractors import ClassifierExtractor
from genvision.metrics.sources import SourceOptions, extract, resolve_source, source_statistics
from genvision.metrics.stats import frechet_distance
from genvision.metrics.statsfile import StatsMetadata, save_stats
from helpers import make_classifier, record_calls, write_pngs


@pytest.fixture(scope="module")
def extractor(classifier_file):
    return ClassifierExtractor.from_file(classifier_file)


# ---------------------------------------------------------------------------------------------------------------
# Resolving SOURCE strings.


def test_resolve_source_kinds(tmp_path):
    images = tmp_path / "images"
    write_pngs(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), images)
    assert resolve_source(str(images)).kind == "folder"
    assert resolve_source(f"folder:{images}").kind == "folder"

    run = tmp_path / "run"
    (run / "checkpoints" / "step-000100").mkdir(parents=True)
    assert resolve_source(str(run)).kind == "generator"
    assert resolve_source(str(run / "checkpoints" / "step-000100")).kind == "generator"
    vae_run = tmp_path / "vae-run"
    vae_run.mkdir()
    (vae_run / "config.json").write_text(json.dumps({"kind": "vae", "config": {}}))
    assert resolve_source(str(vae_run)).kind == "generator"
    classifier_run = tmp_path / "classifier-run"
    classifier_run.mkdir()
    (classifier_run / "config.json").write_text(json.dumps({"kind": "classifier"}))
    assert resolve_source(str(classifier_run)).kind == "folder"
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"x")
    assert resolve_source(str(checkpoint)).kind == "generator"

    stats = tmp_path / "ref.npz"
    save_stats(stats, np.zeros(2), np.eye(2), StatsMetadata("classifier", "ab", 32, 1))
    assert resolve_source(str(stats)).kind == "stats"

    dataset = resolve_source("mnist5k")
    assert (dataset.kind, dataset.spec) == ("dataset", "mnist5k:train")


@pytest.mark.parametrize("text, message", [
    ("nowhere/images", "no such file or folder: nowhere/images"),
    ("missing.npz", "no such file or folder: missing.npz"),
    ("imagenet:train", "not a file, a folder or a dataset spec"),
    ("mnist5k:val", "unknown split"),
])
def test_resolve_source_errors(text, message):
    with pytest.raises(UsageError, match=message):
        resolve_source(text)


def test_single_image_file_is_refused(tmp_path):
    write_pngs(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), tmp_path)
    with pytest.raises(UsageError, match="single image"):
        resolve_source(str(tmp_path / "0000.png"))


# ---------------------------------------------------------------------------------------------------------------
# Extraction and the in-memory / PNG-folder agreement.


def test_extract_tensor_and_batches_agree(extractor):
    images = torch.randint(0, 256, (70, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    stats, logits = extract(images, extractor, batch_size=32, keep_features=True, with_logits=True)
    assert stats.count == 70 and stats.features().shape == (70, 32) and logits.shape == (70, 10)
    with torch.inference_mode():
        direct = extractor.features(to_model_range(images))
    torch.testing.assert_close(stats.features(), direct)
    batched, _ = extract(iter([images[:50], images[50:]]), extractor, batch_size=32)
    torch.testing.assert_close(batched.mean(), stats.mean())
    with pytest.raises(UsageError, match="uint8"):
        extract(images.float(), extractor)


def test_extract_feeds_cuda_from_pinned_memory_and_reads_logits_back_once(extractor):
    """Host batches reach a (pretend) CUDA device through pinned memory with asynchronous copies, and the logits
    come back to the host in one copy at the end, not one blocking copy per batch; the numbers are the CPU's."""
    from fake_cuda import FakeCuda

    images = torch.randint(0, 256, (70, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    on_cpu, cpu_logits = extract(images, extractor, batch_size=32, keep_features=True, with_logits=True)
    try:
        with FakeCuda() as cuda:
            on_cuda, cuda_logits = extract(images, extractor, batch_size=32, device="cuda", keep_features=True,
                                           with_logits=True)
    finally:
        extractor.to("cpu")
    batches = cuda.to_device(torch.uint8)
    assert [copy.shape[0] for copy in batches] == [32, 32, 6]
    assert all(copy.pinned and copy.non_blocking for copy in batches)
    assert [copy.shape for copy in cuda.to_host()] == [(70, 10)]
    torch.testing.assert_close(on_cuda.features(), on_cpu.features(), rtol=0, atol=0)
    torch.testing.assert_close(cuda_logits, cpu_logits, rtol=0, atol=0)


def test_generated_statistics_of_batches_equal_those_of_the_tensor(extractor):
    """Samples handed over as the batches they were made in (training FID's, on the device) score exactly as the
    same samples in one tensor."""
    images = torch.randint(0, 256, (70, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = sources.generated_statistics(images, extractor, 32, need_features=True, need_logits=True)
    batched = sources.generated_statistics(list(images.split(32)), extractor, 32, need_features=True,
                                           need_logits=True)
    assert batched.count == whole.count == 70
    np.testing.assert_array_equal(batched.mu, whole.mu)
    np.testing.assert_array_equal(batched.sigma, whole.sigma)
    assert torch.equal(batched.features, whole.features) and torch.equal(batched.logits, whole.logits)


@pytest.mark.parametrize("shape", [(80, 1, 32, 32), (80, 3, 28, 28)], ids=["gray-32px", "rgb-28px"])
def test_in_memory_and_png_folder_give_identical_fid(extractor, tmp_path, shape):
    generator = torch.Generator().manual_seed(1)
    samples = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    reference = torch.randint(0, 256, (90, 1, 32, 32), dtype=torch.uint8, generator=generator)
    write_pngs(samples, tmp_path / "samples")

    in_memory, _ = extract(samples, extractor, batch_size=500)
    from_folder = source_statistics(str(tmp_path / "samples"), extractor, SourceOptions(batch_size=500))
    ref, _ = extract(reference, extractor)
    mu_ref, sigma_ref = ref.mean_and_covariance()
    mu_mem, sigma_mem = in_memory.mean_and_covariance()
    assert from_folder.count == shape[0]
    np.testing.assert_array_equal(from_folder.mu, mu_mem.numpy())
    np.testing.assert_array_equal(from_folder.sigma, sigma_mem.numpy())
    fid_memory = frechet_distance(mu_mem, sigma_mem, mu_ref, sigma_ref)
    fid_folder = frechet_distance(from_folder.mu, from_folder.sigma, mu_ref, sigma_ref)
    assert fid_memory == fid_folder and fid_memory > 0


def test_mixed_folder_notes_resizing_and_channels_once(extractor, tmp_path, capsys):
    generator = torch.Generator().manual_seed(2)
    write_pngs(torch.randint(0, 256, (3, 3, 28, 28), dtype=torch.uint8, generator=generator), tmp_path / "a")
    write_pngs(torch.randint(0, 256, (3, 1, 40, 40), dtype=torch.uint8, generator=generator), tmp_path / "b")
    write_pngs(torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8, generator=generator), tmp_path / "c")
    result = source_statistics(str(tmp_path), extractor, SourceOptions(batch_size=4))
    assert result.count == 9
    stderr = capsys.readouterr().err.splitlines()
    resized = [line for line in stderr if "resized to 32x32 px" in line]
    converted = [line for line in stderr if "3-channel images are converted to 1 channel" in line]
    padded = [line for line in stderr if "images of 28x28 px are padded with 2 px of black to 32x32 px" in line]
    assert len(resized) == 1 and len(converted) == 1 and len(padded) == 1
    assert "40x40" in resized[0]  # the 28-px images are padded, not resized


@pytest.mark.parametrize("channels", [1, 3])
def test_28px_folder_is_padded_like_its_dataset_spec(extractor, tmp_path, capsys, channels):
    """A folder of 28-px digits and the same digits padded to 32 px (what dataset specs hold) give the same
    statistics; the note says the padding, and the statistics record the folder's 28-px side."""
    from genvision.data import read_mnist5k

    digits = torch.from_numpy(read_mnist5k("test")[0][:60])[:, None].expand(-1, channels, -1, -1)
    write_pngs(digits, tmp_path / "digits")
    padded = torch.zeros(60, 1, 32, 32, dtype=torch.uint8)
    padded[..., 2:30, 2:30] = digits[:, :1]
    folder = source_statistics(str(tmp_path / "digits"), extractor, SourceOptions(batch_size=25))
    in_memory, _ = extract(padded, extractor, batch_size=25)
    mu, sigma = in_memory.mean_and_covariance()
    torch.testing.assert_close(torch.from_numpy(folder.mu), mu)
    torch.testing.assert_close(torch.from_numpy(folder.sigma), sigma)
    assert folder.metadata.source_size == 28 and folder.metadata.resize == "pad28+bicubic-antialias"
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert any("images of 28x28 px are padded with 2 px of black to 32x32 px" in line for line in notes), notes
    assert not any("resized" in line for line in notes), notes


@pytest.mark.parametrize("batch_size", [1, 2, 3, 64])
def test_folder_batches_cover_every_file_in_order(extractor, tmp_path, batch_size):
    images = torch.randint(0, 256, (11, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    write_pngs(images, tmp_path)
    files = sorted(tmp_path.glob("*.png"))
    batches = list(sources.folder_batches(files, extractor, batch_size, "test", workers=2))
    assert [b.shape[0] for b in batches] == [min(batch_size, 11 - s) for s in range(0, 11, batch_size)]
    assert torch.equal(torch.cat(batches), images)


def test_cpu_cores_are_split_between_decoding_and_torch(monkeypatch):
    monkeypatch.setattr(sources, "available_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert sources.split_cpu_cores(torch.device("cpu")) == (1, 1)
    monkeypatch.setattr(sources, "available_cores", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert sources.split_cpu_cores(torch.device("cpu")) == (4, 12)
    assert sources.split_cpu_cores(torch.device("cuda")) == (8, 16)


def test_list_images_matches_data_list_folder(tmp_path):
    from genvision.data import list_folder

    write_pngs(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), tmp_path / "b")
    write_pngs(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), tmp_path / "a" / "deep")
    write_pngs(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), tmp_path)
    (tmp_path / "a" / "UPPER.PNG").write_bytes((tmp_path / "0000.png").read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "a-b").mkdir()
    expected, _, _ = list_folder(str(tmp_path))
    assert sources.list_images(tmp_path) == [str(path) for path in expected]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no images"):
        sources.list_images(tmp_path / "empty")


def test_folder_with_one_image_is_refused(extractor, tmp_path):
    write_pngs(torch.zeros(1, 1, 32, 32, dtype=torch.uint8), tmp_path)
    with pytest.raises(UsageError, match="gives 1 image; FID statistics need at least 2"):
        source_statistics(str(tmp_path), extractor)


def test_stats_source_has_no_raw_features(extractor, tmp_path):
    path = tmp_path / "ref.npz"
    save_stats(path, np.zeros(32), np.eye(32), extractor.metadata("x", 100))
    result = source_statistics(str(path), extractor)
    assert (result.count, result.features, result.logits) == (100, None, None)
    with pytest.raises(UsageError, match="need raw features"):
        source_statistics(str(path), extractor, need_features=True)
    other = tmp_path / "other.npz"
    save_stats(other, np.zeros(32), np.eye(32), StatsMetadata("classifier", "0" * 64, 32, 1))
    with pytest.raises(UsageError, match="was computed with extractor"):
        source_statistics(str(other), extractor)


# ---------------------------------------------------------------------------------------------------------------
# The reference-statistics cache.


def test_reference_cache_skips_second_extraction(extractor, tmp_path, monkeypatch):
    calls = record_calls(monkeypatch, sources, "extract", "name")
    options = SourceOptions(cache_dir=tmp_path / "stats")
    first = source_statistics("mnist5k:test", extractor, options, need_logits=True)
    assert len(calls) == 1 and not first.from_cache and first.count == 500
    second = source_statistics("mnist5k:test", extractor, options, need_logits=True)
    assert len(calls) == 1 and second.from_cache
    np.testing.assert_array_equal(first.mu, second.mu)
    np.testing.assert_array_equal(first.sigma, second.sigma)
    torch.testing.assert_close(first.logits, second.logits)
    cached = sorted(p.name for p in (tmp_path / "stats").iterdir())
    assert cached == [
        f"mnist5k-test-32px-1ch-classifier-{extractor.weights_hash[:16]}-v1.2.features.safetensors",
        f"mnist5k-test-32px-1ch-classifier-{extractor.weights_hash[:16]}-v1.2.npz",
    ]

    # Raw features were not cached (only mu, sigma and logits): the first run that needs them recomputes once.
    third = source_statistics("mnist5k:test", extractor, options, need_features=True)
    assert len(calls) == 2 and third.features.shape == (500, 32)
    fourth = source_statistics("mnist5k:test", extractor, options, need_features=True, need_logits=True)
    assert len(calls) == 2 and fourth.from_cache
    torch.testing.assert_close(third.features, fourth.features)

    no_cache = source_statistics("mnist5k:test", extractor, SourceOptions(use_cache=False))
    assert len(calls) == 3 and not no_cache.from_cache


def test_reference_cache_is_keyed_by_extractor(extractor, tmp_path):
    other_path = tmp_path / "other.safetensors"
    make_classifier(other_path, seed=3)
    other = ClassifierExtractor.from_file(other_path)
    options = SourceOptions(cache_dir=tmp_path / "stats")
    first = source_statistics("mnist5k:test", extractor, options)
    second = source_statistics("mnist5k:test", other, options)
    assert not second.from_cache
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 2
    assert frechet_distance(first.mu, first.sigma, second.mu, second.sigma) > 0


def test_corrupt_cache_entry_is_recomputed(extractor, tmp_path):
    options = SourceOptions(cache_dir=tmp_path / "stats")
    first = source_statistics("mnist5k:test", extractor, options)
    (entry,) = (tmp_path / "stats").glob("*.npz")
    entry.write_bytes(b"garbage")
    second = source_statistics("mnist5k:test", extractor, options)
    assert not second.from_cache
    np.testing.assert_array_equal(first.mu, second.mu)


# ---------------------------------------------------------------------------------------------------------------
# Folders made by others: decompression bombs and files that are not images.


def bomb_folder(folder, name: str = "0001.png"):
    """Two images; `name` a 1-bit 100 x 100 PNG, a bomb once PIL.Image.MAX_IMAGE_PIXELS is lowered below 10000."""
    from PIL import Image

    write_pngs(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), folder)
    Image.new("1", (100, 100)).save(folder / name)
    return folder / name


def test_fid_folder_with_a_decompression_bomb_is_one_line_in_a_real_process(tmp_path, classifier_file):
    """`genvision fid FOLDER mnist5k:test`, the limit lowered to 6000 pixels in the process: PIL alone would only warn
    about the 10000-pixel PNG and decode it; genvision refuses it in one line, exit 2, no warning printed."""
    from helpers import assert_one_line_error, run_python

    bomb = bomb_folder(tmp_path / "images")
    lowered = ("import sys, PIL.Image, genvision.imagefile; PIL.Image.MAX_IMAGE_PIXELS = 6000; "
               "from genvision.cli import main; sys.exit(main(sys.argv[1:]))")
    result = run_python(["-c", lowered, "fid", str(tmp_path / "images"), "mnist5k:test", "--classifier",
                         str(classifier_file)])
    assert result.stdout == ""
    assert_one_line_error(result.returncode, result.stderr, f"cannot read image {bomb}: 10000 pixels exceeds the "
                          "limit of 6000 pixels per image", "decompression bomb", command="fid")


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")  # as genvision.imagefile sets it
@pytest.mark.parametrize("limit", [6000, 4096])
def test_folder_decompression_bomb_in_every_decode_path(extractor, tmp_path, monkeypatch, limit):
    from PIL import Image

    import genvision.imagefile

    genvision.imagefile.configure_pil()  # first: genvision's first image sets the limit the test then lowers
    from helpers import assert_one_line_error, cli

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    bomb = bomb_folder(tmp_path / "images")
    for read in (sources.decode_array, sources.decode_native, sources.image_size):
        with pytest.raises(UsageError, match="decompression bomb") as error:
            read(bomb)
        assert str(error.value).startswith(f"cannot read image {bomb}: 10000 pixels exceeds the limit of {limit} ")
    with pytest.raises(UsageError, match="decompression bomb"):
        source_statistics(str(tmp_path / "images"), extractor)
    code, stdout, stderr = cli("fid", tmp_path / "images", "mnist5k:test", "--classifier", extractor.path)
    assert stdout == ""
    assert_one_line_error(code, stderr, str(bomb), "decompression bomb", command="fid")


def test_folder_fifo_is_refused_not_read(extractor, tmp_path):
    """A FIFO named like an image would block the read for ever: refused before it is opened."""
    import os

    write_pngs(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), tmp_path / "images")
    os.mkfifo(tmp_path / "images" / "0002.png")
    with pytest.raises(UsageError) as error:
        source_statistics(str(tmp_path / "images"), extractor)
    assert str(error.value) == f"cannot read image {tmp_path / 'images' / '0002.png'}: not a regular file"


def test_features_are_extracted_without_tf32_or_autocast_and_the_settings_come_back():
    """Training turns TF32 on for CUDA (`configure_backends`) and may run under bf16 autocast; feature extraction
    runs in full float32 whatever those settings are, so GPU-made statistics match CPU-made references."""
    import torch

    from genvision.metrics.sources import extract

    seen = []

    class Spy:
        extractor_id, weights_hash, resize, resizes_internally = "spy", "0" * 64, "pad28+bicubic-antialias", False
        input_size, input_channels, num_features, num_classes = 8, 1, 3, 0
        feature_blocks = (("all", 3),)

        def to(self, device):
            return self

        def describe(self):
            return "spy"

        def features_and_logits(self, images):
            seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                         torch.is_autocast_enabled("cpu")))
            return images.flatten(1)[:, :3].float() * 1.0, None

    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            extract(images, Spy(), batch_size=4)
        assert seen == [(False, False, False)] * 3
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


# ---------------------------------------------------------------------------------------------------------------
# Labels (`need_labels`): for the conditional metrics.


def test_dataset_labels_come_with_the_features_and_are_cached(extractor, tmp_path, monkeypatch):
    """mnist5k:test's labels, in the order of its features; cached beside the logits (the second call extracts
    nothing); a cache entry written without them is recomputed once."""
    from safetensors.torch import load_file, save_file

    from genvision.data import load_dataset

    calls = record_calls(monkeypatch, sources, "extract", "name")
    options = SourceOptions(cache_dir=tmp_path / "stats")
    expected = load_dataset("mnist5k:test").labels
    first = source_statistics("mnist5k:test", extractor, options, need_logits=True, need_labels=True)
    assert len(calls) == 1 and torch.equal(first.labels, expected) and first.labels.dtype == torch.int64
    assert first.class_names == ()  # a dataset spec: matched by index
    second = source_statistics("mnist5k:test", extractor, options, need_logits=True, need_labels=True)
    assert len(calls) == 1 and second.from_cache and torch.equal(second.labels, expected)
    assert source_statistics("mnist5k:test", extractor, options).labels is None  # not asked for
    (sidecar,) = (tmp_path / "stats").glob("*.features.safetensors")
    save_file({"logits": load_file(str(sidecar))["logits"]}, str(sidecar))  # an entry of an earlier version
    third = source_statistics("mnist5k:test", extractor, options, need_labels=True)
    assert len(calls) == 2 and not third.from_cache and torch.equal(third.labels, expected)


def test_folder_labels_are_its_class_subfolders_in_file_order(extractor, tmp_path):
    write_pngs(torch.zeros(3, 1, 32, 32, dtype=torch.uint8), tmp_path / "cls" / "seven")
    write_pngs(torch.full((2, 1, 32, 32), 255, dtype=torch.uint8), tmp_path / "cls" / "one")
    result = source_statistics(str(tmp_path / "cls"), extractor, SourceOptions(batch_size=2), need_labels=True)
    assert result.class_names == ("one", "seven") and result.labels.tolist() == [0, 0, 1, 1, 1]
    features = source_statistics(str(tmp_path / "cls"), extractor, need_features=True).features
    assert (features[:2] != features[2]).any(dim=1).all()  # rows 0-1 are the white "one" images: same order
    write_pngs(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), tmp_path / "flat")
    flat = source_statistics(str(tmp_path / "flat"), extractor, need_labels=True)
    assert flat.labels is None and flat.class_names == ()
    write_pngs(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), tmp_path / "single" / "only")
    assert source_statistics(str(tmp_path / "single"), extractor, need_labels=True).labels is None


def loaded_generator(class_counts: tuple[int, ...] = ()):
    """A `generators.LoadedGenerator` around a fixed function (a conditional one when `class_counts`): the class
    sets the image's brightness, so the features tell the classes apart."""
    from genvision.checkpoint import Checkpoint
    from genvision.generators import LoadedGenerator

    weight = torch.linspace(-1, 1, 4 * 32 * 32).reshape(4, 32 * 32)

    def decode(latents, labels=None):
        images = torch.tanh(latents @ weight).reshape(-1, 1, 32, 32)
        return images if labels is None else images * 0.5 + (labels.float() / 3 - 0.4)[:, None, None, None]

    names = tuple(f"c{index}" for index in range(len(class_counts)))
    return LoadedGenerator(decode, 4, 32, 1, Checkpoint(Path("stand-in"), {}), False, class_names=names,
                           class_counts=tuple(class_counts))


def test_conditional_generator_gives_the_labels_it_was_sampled_with(extractor, monkeypatch, tmp_path):
    """The requested labels are those `sampling.generate_shard` drew the samples with (`sampling.shard_labels` of
    the same batch blocks, gathered), with the generator's class names; an unconditional generator and a source
    asked for no labels have none."""
    from genvision import sampling

    monkeypatch.setattr(sampling, "load_generator", lambda *args, **kwargs: loaded_generator((5, 3, 2)))
    source = sources.Source("gen", "generator", tmp_path)
    options = SourceOptions(num_samples=10, seed=4, batch_size=3)
    result = source_statistics(source, extractor, options, need_features=True, need_labels=True)
    expected = sampling.class_labels(10, (5, 3, 2), 4)
    assert torch.equal(result.labels, expected) and result.class_names == ("c0", "c1", "c2")
    assert expected.bincount().tolist() == [5, 3, 2]
    one = source_statistics(source, extractor, options, need_features=True)  # same samples, no labels asked
    assert one.labels is None and torch.equal(one.features, result.features)
    drawn = sampling.generate(loaded_generator((5, 3, 2)), 10, 4, labels=expected)  # each row drawn for its label
    by_label = extract(drawn, extractor, keep_features=True)[0].features()
    torch.testing.assert_close(result.features, by_label)
    other = extract(sampling.generate(loaded_generator((5, 3, 2)), 10, 4, labels=(expected + 1) % 3), extractor,
                    keep_features=True)[0].features()
    assert not torch.allclose(result.features, other)  # the labels matter to the images
    monkeypatch.setattr(sampling, "load_generator", lambda *args, **kwargs: loaded_generator())
    assert source_statistics(source, extractor, options, need_labels=True).labels is None
