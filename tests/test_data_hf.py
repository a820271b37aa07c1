"""genvision.data_hf: ``hf:PATH[:SPLIT]`` datasets decode to the images they hold, from save_to_disk folders and
parquet files, in training, `genvision fid` / `stats` and `train-classifier`, with their one-line errors.

The datasets are written here with the `datasets` library itself: 16 train and 8 test images of 32 x 32 px (gray, in
column ``image``, decoded exactly), a ClassLabel ``label``, a second image column ``photo`` (RGB, 48 x 40 px: the
resize-and-crop path) and an integer column ``digit``. The one training run is a subprocess started before the first
test (`gan_run`), so the in-process tests run while it imports torch and trains.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import genvision.data as data
from genvision.config import ClassifierConfig, DataConfig, VAEConfig
from genvision.data import DatasetSpec, InMemoryBatches, StreamingBatches, load_dataset, prepare_image
from genvision.data_hf import data_files, parse_hf
from genvision.errors import UsageError
from helpers import TINY_GAN, assert_one_line_error, cli, finish, snapshot

datasets = pytest.importorskip("datasets")

SIZES = {"train": 16, "test": 8}
COLUMNS = ["image (Image)", "label (ClassLabel with 2 classes)", "photo (Image)", "digit (int64)"]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def split_arrays(split: str) -> dict[str, np.ndarray]:
    """The pixels and labels of one split: gray 32 x 32, RGB 40 x 48 (H x W), ClassLabel i % 2, digit i % 3."""
    rng = np.random.default_rng(len(split))
    n = SIZES[split]
    return {"image": rng.integers(0, 256, (n, 32, 32), dtype=np.uint8),
            "photo": rng.integers(0, 256, (n, 40, 48, 3), dtype=np.uint8),
            "label": np.arange(n) % 2, "digit": np.arange(n) % 3}


def make_split(split: str, columns=("image", "label", "photo", "digit")):
    arrays = split_arrays(split)
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2), "photo": datasets.Image(),
                "digit": datasets.Value("int64")}
    values = {"image": [Image.fromarray(a, "L") for a in arrays["image"]],
              "photo": [Image.fromarray(a, "RGB") for a in arrays["photo"]],
              "label": arrays["label"].tolist(), "digit": arrays["digit"].tolist()}
    return datasets.Dataset.from_dict({c: values[c] for c in columns},
                                      features=datasets.Features({c: features[c] for c in columns}))


def write_parquet(folder, files: dict[str, str]) -> None:
    """name -> split: the split's rows as one parquet file, as `Dataset.to_parquet` writes it."""
    for name, split in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        make_split(split).to_parquet(str(folder / name))


@pytest.fixture(scope="module")
def hf_data(tmp_path_factory):
    """{"saved": DatasetDict.save_to_disk folder, "parquet": the same splits as parquet files, "single": one Dataset
    saved without splits and without labels}."""
    root = tmp_path_factory.mktemp("hf")
    datasets.disable_progress_bars()
    datasets.DatasetDict({split: make_split(split) for split in SIZES}).save_to_disk(str(root / "saved"))
    write_parquet(root / "parquet", {"train-00000-of-00001.parquet": "train",
                                     "data/test-00000-of-00001.parquet": "test"})
    make_split("test", ("image", "photo")).save_to_disk(str(root / "single"))
    datasets.enable_progress_bars()
    return {name: root / name for name in ("saved", "parquet", "single")}


@pytest.fixture(scope="module", autouse=True)
def gan_run(hf_data, start_process, tmp_path_factory):
    """`python train_gan.py --dataset hf:SAVED`, 2 tiny steps, started before the first test: (process, run folder)."""
    out = tmp_path_factory.mktemp("gan") / "run"
    argv = ["train_gan.py", "--dataset", f"hf:{hf_data['saved']}", "--out-dir", str(out), "--num-steps", "2",
            *TINY_GAN]
    return start_process(argv), out


# ---------------------------------------------------------------------------------------------------------------
# Specs, splits and layouts.


def test_spec_parse_and_str(tmp_path):
    assert DatasetSpec.parse("hf:data/saved") == DatasetSpec("hf", "", "data/saved")
    assert DatasetSpec.parse("hf:data/saved:test") == DatasetSpec("hf", "test", "data/saved")
    assert DatasetSpec.parse("hf:ylecun/mnist:train") == DatasetSpec("hf", "train", "ylecun/mnist")
    assert DatasetSpec.parse("hf:mnist") == DatasetSpec("hf", "", "mnist")
    # the last ':' part is the split only when it holds no '/': a PATH holding ':' ends with '/'
    assert parse_hf("hf:my:data/") == ("my:data/", "") and parse_hf("hf:my:data/:test") == ("my:data/", "test")
    for text in ("hf:a/b", "hf:a/b:test", "hf:my:data/", "hf:my:data/:validation.v2"):
        assert str(DatasetSpec.parse(text)) == text
    for spec, words in (("hf:", ["needs a path"]), ("hf::test", ["needs a path"]), ("hf:a/b:", ["ends with ':'"]),
                        ("hf:a/b:tr ain", ["'tr ain'", "not a split name", "end with '/'"])):
        with pytest.raises(UsageError) as error:
            DatasetSpec.parse(spec)
        assert all(word in one_line(error) for word in words), one_line(error)


def test_parquet_layout_rule(tmp_path):
    write_parquet(tmp_path / "hub", {"data/train-00000-of-00002.parquet": "train",
                                     "data/train-00001-of-00002.parquet": "train",
                                     "data/validation.parquet": "test", "test/0000.parquet": "test"})
    files = data_files(tmp_path / "hub")
    assert list(files) == ["train", "validation", "test"]
    assert [p.name for p in files["train"]] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert [p.name for p in files["test"]] == ["0000.parquet"]
    write_parquet(tmp_path / "plain", {"0000.parquet": "train", "part/0001.parquet": "test"})
    assert list(data_files(tmp_path / "plain")) == ["train"]  # no file names a split: all are train
    assert len(load_dataset(f"hf:{tmp_path / 'plain'}", 32, 0, cache_dir=tmp_path / "cache")) == 24
    write_parquet(tmp_path / "mixed", {"train-0.parquet": "train", "extra.parquet": "test"})
    with pytest.raises(UsageError) as error:
        load_dataset(f"hf:{tmp_path / 'mixed'}", 32, 0, cache_dir=tmp_path / "cache")
    assert "extra.parquet" in one_line(error) and "train-00000-of-00001.parquet" in one_line(error)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UsageError) as error:
        load_dataset(f"hf:{tmp_path / 'nothing'}", 32, 0, cache_dir=tmp_path / "cache")
    assert "save_to_disk" in one_line(error) and ".parquet" in one_line(error)


def test_held_out_default(hf_data, tmp_path):
    saved, parquet, single = (str(hf_data[name]) for name in ("saved", "parquet", "single"))
    assert VAEConfig(dataset=f"hf:{saved}").resolved_eval_dataset() == f"hf:{saved}:test"
    assert ClassifierConfig(dataset=f"hf:{parquet}:train").resolved_eval_dataset() == f"hf:{parquet}:test"
    assert ClassifierConfig(dataset=f"hf:{single}").resolved_eval_dataset() == f"hf:{single}"  # no splits: itself
    write_parquet(tmp_path / "tv", {"train.parquet": "train", "validation.parquet": "test"})
    assert VAEConfig(dataset=f"hf:{tmp_path / 'tv'}").resolved_eval_dataset() == f"hf:{tmp_path / 'tv'}:validation"
    write_parquet(tmp_path / "t", {"train.parquet": "train"})
    assert VAEConfig(dataset=f"hf:{tmp_path / 't'}").resolved_eval_dataset() == f"hf:{tmp_path / 't'}"
    assert VAEConfig(dataset="hf:user/name").resolved_eval_dataset() == "hf:user/name:test"  # a Hub id
    assert VAEConfig(dataset=f"hf:{saved}", eval_dataset="mnist5k:test").resolved_eval_dataset() == "mnist5k:test"


# ---------------------------------------------------------------------------------------------------------------
# Decoding and the cache.


@pytest.mark.parametrize("layout", ["saved", "parquet"])
def test_decodes_the_stored_images_exactly(hf_data, tmp_path, layout):
    for spec, split in ((f"hf:{hf_data[layout]}", "train"), (f"hf:{hf_data[layout]}:test", "test")):
        loaded = load_dataset(spec, 32, 0, cache_dir=tmp_path / "cache")
        arrays = split_arrays(split)
        assert loaded.images.dtype == torch.uint8 and loaded.images.shape == (SIZES[split], 1, 32, 32)
        assert np.array_equal(loaded.images[:, 0].numpy(), arrays["image"])
        assert torch.equal(loaded.labels, torch.from_numpy(arrays["label"]))
        assert loaded.num_classes == 2 and loaded.spec == spec
    rgb = load_dataset(f"hf:{hf_data[layout]}:test", 32, 3, cache_dir=tmp_path / "cache")
    assert np.array_equal(rgb.images.numpy(), np.repeat(split_arrays("test")["image"][:, None], 3, axis=1))


def test_other_columns_go_through_the_folder_decoding_path(hf_data, tmp_path):
    loaded = load_dataset(f"hf:{hf_data['saved']}:test", 16, 0, cache_dir=tmp_path / "cache",
                          image_column="photo", label_column="digit")
    arrays = split_arrays("test")
    expected = np.stack([prepare_image(Image.fromarray(a, "RGB"), 16, 3) for a in arrays["photo"]])
    assert loaded.images.shape == (8, 3, 16, 16) and np.array_equal(loaded.images.numpy(), expected)
    assert loaded.labels.tolist() == arrays["digit"].tolist() and loaded.num_classes == 3  # integers: max + 1
    unlabelled = load_dataset(f"hf:{hf_data['single']}", 32, 0, cache_dir=tmp_path / "cache")
    assert np.array_equal(unlabelled.images[:, 0].numpy(), arrays["image"])  # the first Image column
    assert unlabelled.labels.tolist() == [0] * 8 and unlabelled.num_classes == 1
    # the DataLoader path decodes the same batches, in the same order
    spec = f"hf:{hf_data['saved']}"
    streamed = StreamingBatches(spec, DataConfig(image_column="photo"), 8, num_workers=0)
    in_memory = InMemoryBatches(load_dataset(spec, 32, 0, cache_dir=tmp_path / "cache", image_column="photo"), 8)
    for _ in range(3):
        (a, a_labels), (b, b_labels) = next(streamed), next(in_memory)
        assert torch.equal(a, b) and torch.equal(a_labels, b_labels)


def test_cache_hit_and_misses_on_changed_files_and_columns(hf_data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    folder = tmp_path / "pq"
    write_parquet(folder, {"train-0.parquet": "train", "test-0.parquet": "test"})
    calls = []
    real = data.decode_all
    monkeypatch.setattr(data, "decode_all", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    first = load_dataset(f"hf:{folder}:test", 32, 0, cache_dir=cache)
    again = load_dataset(f"hf:{folder}:test", 32, 0, cache_dir=cache, image_column="image")  # the same columns
    assert len(calls) == 1 and torch.equal(first.images, again.images)
    (name,) = [p.name for p in cache.glob("*.safetensors")]
    assert name.startswith("hf-") and "32px-1ch" in name
    load_dataset(f"hf:{folder}:test", 32, 0, cache_dir=cache, label_column="digit")
    assert len(calls) == 2  # other columns: another cache entry
    make_split("train").to_parquet(str(folder / "test-0.parquet"))  # the test file now holds the train rows
    changed = load_dataset(f"hf:{folder}:test", 32, 0, cache_dir=cache)
    assert len(calls) == 3 and np.array_equal(changed.images[:, 0].numpy(), split_arrays("train")["image"])
    assert len(list(cache.glob("*.safetensors"))) == 3


# ---------------------------------------------------------------------------------------------------------------
# Errors of the loader.


def test_bad_splits_columns_and_paths(hf_data, tmp_path):
    saved = hf_data["saved"]
    cases = [(f"hf:{saved}:valid", {}, ["no split 'valid'", "train, test"]),
             (f"hf:{hf_data['single']}:train", {}, ["without splits", "drop ':train'"]),
             (f"hf:{saved}", {"image_column": "img"}, ["'img'", "--image-column", *COLUMNS]),
             (f"hf:{saved}", {"label_column": "class"}, ["'class'", "--label-column", *COLUMNS]),
             (f"hf:{saved}", {"image_column": "digit"}, ["'digit'", "not an image column"]),
             (f"hf:{saved}", {"label_column": "photo"}, ["'photo'", "not labels"]),
             ("hf:someone/some-dataset", {}, ["someone/some-dataset", "not a local folder", "--download"])]
    for spec, columns, words in cases:
        with pytest.raises(UsageError) as error:
            load_dataset(spec, 32, 0, cache_dir=tmp_path / "cache", **columns)
        assert all(word in one_line(error) for word in words), (words, one_line(error))
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.safetensors"))


# ---------------------------------------------------------------------------------------------------------------
# Rows made by others: image paths instead of bytes, decompression bombs.


def path_rows(folder, paths) -> None:
    """folder/train.parquet whose image column stores each of `paths` and no bytes, as `Dataset.to_parquet` writes
    a dataset built from image file paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = datasets.Dataset.from_dict({"image": [str(path) for path in paths], "label": [0, 1] * (len(paths) // 2)},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "label": datasets.ClassLabel(num_classes=2)}))
    rows.to_parquet(str(folder / "train.parquet"))
    import pyarrow.parquet

    stored = pyarrow.parquet.read_table(folder / "train.parquet").column("image").to_pylist()
    assert [row["bytes"] for row in stored] == [None] * len(paths)  # what the loader meets: a path, no bytes


def gray_png(path, value: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32), value, dtype=np.uint8), "L").save(path)
    return path


def test_rows_without_bytes_read_only_files_inside_the_dataset_folder(tmp_path):
    folder = tmp_path / "pq"
    inside = [gray_png(folder / "images" / f"{i}.png", 10 * i) for i in range(4)]
    path_rows(folder, inside)
    loaded = load_dataset(f"hf:{folder}", 32, 0, cache_dir=tmp_path / "cache")  # inside: read as before
    assert loaded.images[:, 0, 0, 0].tolist() == [0, 10, 20, 30] and loaded.labels.tolist() == [0, 1, 0, 1]

    outside = gray_png(tmp_path / "private" / "photo.png", 99)  # an image that is not the dataset's
    for index, stranger in ((1, outside), (1, "a link inside that leads outside"), (0, "/etc/passwd")):
        shutil.rmtree(folder)
        rows = [gray_png(folder / "images" / f"{i}.png", 0) for i in range(2)]
        if stranger == "a link inside that leads outside":
            stranger = folder / "images" / "link.png"
            stranger.symlink_to(outside)
        rows[index] = stranger
        path_rows(folder, rows)
        with pytest.raises(UsageError) as error:
            load_dataset(f"hf:{folder}", 32, 0, cache_dir=tmp_path / "cache")
        assert one_line(error) == (f"row {index} of hf:{folder}:train stores no image bytes in column 'image', only "
                                   f"the path {stranger}, which leads outside the dataset's folder {folder}; "
                                   "genvision reads no image files from elsewhere (store the images' bytes, e.g. "
                                   "with save_to_disk)")


def test_row_naming_a_fifo_is_refused_not_read(tmp_path):
    import os

    folder = tmp_path / "pq"
    rows = [gray_png(folder / "images" / "0.png", 0), folder / "images" / "1.png"]
    os.mkfifo(rows[1])  # a read would block until someone writes
    path_rows(folder, rows)
    with pytest.raises(UsageError) as error:
        load_dataset(f"hf:{folder}", 32, 0, cache_dir=tmp_path / "cache")
    assert one_line(error) == f"cannot read image 1 of hf:{folder}:train (column 'image'): not a regular file"


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")  # as genvision.imagefile sets it
@pytest.mark.parametrize("limit", [6000, 4096])
@pytest.mark.parametrize("row", [0, 1])  # row 0 is opened with the dataset (its channels), row 1 when decoding
def test_decompression_bomb_in_a_row_is_one_line(tmp_path, monkeypatch, limit, row):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    images = [Image.new("L", (32, 32)), Image.new("L", (32, 32))]
    images[row] = Image.new("1", (100, 100))  # 10000 pixels: a bomb under the lowered limit
    rows = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    rows.to_parquet(str(tmp_path / "pq" / "train.parquet"))
    with pytest.raises(UsageError) as error:
        load_dataset(f"hf:{tmp_path / 'pq'}", 32, 0, cache_dir=tmp_path / "cache")
    assert one_line(error) == (f"cannot read image {row} of hf:{tmp_path / 'pq'}:train (column 'image'): 10000 pixels "
                               f"exceeds the limit of {limit} pixels per image (PIL.Image.MAX_IMAGE_PIXELS); refusing "
                               "a possible decompression bomb")
    code, stdout, stderr = cli("stats", f"hf:{tmp_path / 'pq'}", "--output", tmp_path / "x.npz", "--features",
                               "classifier")
    assert_one_line_error(code, stderr, f"cannot read image {row} of hf:", "decompression bomb", command="stats")
    assert stdout == "" and not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------------------------------------------------------
# The commands.


def test_fid_and_stats_of_hf_sources(hf_data, tmp_path, classifier_file):
    saved, parquet = hf_data["saved"], hf_data["parquet"]
    code, out, err = cli("fid", f"hf:{saved}:test", f"hf:{saved}:train", "--classifier", classifier_file, "--json")
    assert code == 0 and "Traceback" not in err, err
    report = json.loads(out)
    assert report["n_a"] == 8 and report["n_b"] == 16 and report["fid"] > 0 and report["features"] == "classifier"
    for name, source in (("saved", f"hf:{saved}"), ("parquet", f"hf:{parquet}")):
        code, out, err = cli("stats", source, "--output", tmp_path / f"{name}.npz", "--classifier", classifier_file,
                             "--no-cache")
        assert code == 0 and out.startswith(f"wrote {tmp_path / name}.npz") and "16 images" in out, err
    with np.load(tmp_path / "saved.npz") as a, np.load(tmp_path / "parquet.npz") as b:
        np.testing.assert_allclose(a["mu"], b["mu"], rtol=0, atol=1e-6)  # the same images in both layouts
    # --image-column / --label-column reach the loader: 16 RGB photos scored instead
    code, out, err = cli("stats", f"hf:{saved}", "--output", tmp_path / "photo.npz", "--classifier", classifier_file,
                         "--image-column", "photo", "--label-column", "digit")
    assert code == 0, err
    with np.load(tmp_path / "saved.npz") as a, np.load(tmp_path / "photo.npz") as b:
        assert not np.allclose(a["mu"], b["mu"])


def test_missing_column_is_one_line_and_writes_nothing(hf_data, tmp_path, classifier_file):
    before = snapshot(tmp_path)
    code, _, err = cli("stats", f"hf:{hf_data['saved']}", "--output", tmp_path / "x.npz", "--classifier",
                       classifier_file, "--image-column", "img")
    assert_one_line_error(code, err, "'img'", *COLUMNS, command="stats")
    code, _, err = cli("train-classifier", "--dataset", f"hf:{hf_data['saved']}", "--label-column", "class",
                       "--out-dir", tmp_path / "clf", "--epochs", "1")
    assert_one_line_error(code, err, "'class'", *COLUMNS, command="train-classifier")
    code, _, err = cli("train-classifier", "--dataset", f"hf:{hf_data['single']}", "--out-dir", tmp_path / "clf",
                       "--epochs", "1")
    assert_one_line_error(code, err, "no label column", "image (Image), photo (Image)", "--label-column",
                          command="train-classifier")
    code, _, err = cli("fid", f"hf:{hf_data['saved']}:valid", f"hf:{hf_data['saved']}", "--classifier",
                       classifier_file)
    assert_one_line_error(code, err, "no split 'valid'", "train, test", command="fid")
    code, _, err = cli("stats", "hf:someone/some-dataset", "--output", tmp_path / "x.npz", "--classifier",
                       classifier_file)
    assert_one_line_error(code, err, "someone/some-dataset is not a local folder", "--download", command="stats")
    assert snapshot(tmp_path) == before


def test_without_the_datasets_package(hf_data, tmp_path, classifier_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails as when it is not installed
    code, _, err = cli("stats", f"hf:{hf_data['saved']}", "--output", tmp_path / "x.npz", "--classifier",
                       classifier_file)
    assert_one_line_error(code, err, "'datasets' package", "pip install 'genvision[hf]'", command="stats")
    code, _, err = cli("train-gan", "--dataset", f"hf:{hf_data['saved']}", "--out-dir", tmp_path / "run",
                       "--dry-run")
    assert_one_line_error(code, err, f"--dataset hf:{hf_data['saved']}", "pip install 'genvision[hf]'",
                          command="train-gan")
    assert list(tmp_path.iterdir()) == []


def test_train_classifier_on_hf_dataset(hf_data, tmp_path):
    out = tmp_path / "clf"
    code, stdout, err = cli("train-classifier", "--dataset", f"hf:{hf_data['saved']}", "--out-dir", out, "--epochs",
                            "1", "--batch-size", "8", "--base-channels", "4", "--num-features", "8")
    assert code == 0, err
    assert stdout.strip().splitlines()[-1].startswith("final test accuracy") and \
        f"hf:{hf_data['saved']}:test (8 images)" in stdout
    assert (out / "classifier.safetensors").is_file()
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["dataset"] == f"hf:{hf_data['saved']}" and saved["image_column"] == ""


def test_train_gan_on_hf_dataset(gan_run):
    process, out = gan_run
    finish(process, "train_gan.py --dataset hf:SAVED")
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["dataset"].startswith("hf:") and config["label_column"] == ""
    assert (out / "checkpoints" / "step-000002").is_dir() and (out / "final.png").is_file()
