"""genvision.data: every dataset spec decodes to the right pixels, the cache, and the batch iterators.

The torchvision datasets are written here in their real on-disk formats with a handful of images, so every test
runs offline.
"""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

import genvision.data as data
from genvision.config import DataConfig
from genvision.data import (DatasetSpec, ImageData, InMemoryBatches, StreamingBatches, load_dataset, load_from_config,
                            make_batches)
from genvision.errors import UsageError
from genvision.imageconv import to_model_range

RNG = np.random.default_rng(1234)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def pad28(digits: np.ndarray) -> np.ndarray:
    """(N, 28, 28) -> (N, 1, 32, 32) with a 2 px zero border, as decoding does."""
    out = np.zeros((len(digits), 1, 32, 32), dtype=np.uint8)
    out[:, 0, 2:30, 2:30] = digits
    return out


# ---------------------------------------------------------------------------------------------------------------
# mnist5k


@pytest.fixture(scope="module")
def mnist5k_table():
    with gzip.open(data.mnist5k_file(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    return table[:, :784].astype(np.uint8).reshape(-1, 28, 28), table[:, 784]


@pytest.fixture(scope="module")
def mnist5k_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mnist5k-cache")


@pytest.fixture(scope="module")
def mnist5k_train(mnist5k_cache):
    return load_dataset("mnist5k:train", 32, 0, cache_dir=mnist5k_cache)


@pytest.fixture(scope="module")
def mnist5k_test(mnist5k_cache):
    return load_dataset("mnist5k:test", 32, 0, cache_dir=mnist5k_cache)


def test_mnist5k_splits(mnist5k_train, mnist5k_test, mnist5k_table):
    pixels, labels = mnist5k_table
    assert mnist5k_train.images.shape == (4500, 1, 32, 32) and mnist5k_train.images.dtype == torch.uint8
    assert mnist5k_test.images.shape == (500, 1, 32, 32) and mnist5k_test.images.dtype == torch.uint8
    assert mnist5k_train.labels.dtype == torch.int64
    assert torch.equal(torch.bincount(mnist5k_train.labels, minlength=10), torch.full((10,), 450))
    assert torch.equal(torch.bincount(mnist5k_test.labels, minlength=10), torch.full((10,), 50))
    assert mnist5k_train.num_classes == mnist5k_test.num_classes == 10
    assert mnist5k_train.spec == "mnist5k:train" and mnist5k_test.spec == "mnist5k:test"
    assert DatasetSpec.parse("mnist5k") == DatasetSpec("mnist5k", "train")

    class0 = pixels[labels == 0]
    # the first test digit is the 451st digit of class 0 in file order, padded 28 -> 32
    assert mnist5k_test.labels[0].item() == 0
    assert np.array_equal(mnist5k_test.images[0, 0, 2:30, 2:30].numpy(), class0[450])
    # in full: train = first 450 of each class, test = the other 50, both in file order
    train_expected = np.concatenate([pixels[labels == k][:450] for k in range(10)])
    test_expected = np.concatenate([pixels[labels == k][450:] for k in range(10)])
    assert np.array_equal(mnist5k_train.images.numpy(), pad28(train_expected))
    assert np.array_equal(mnist5k_test.images.numpy(), pad28(test_expected))
    assert torch.equal(mnist5k_train.labels, torch.arange(10).repeat_interleave(450))
    assert torch.equal(mnist5k_test.labels, torch.arange(10).repeat_interleave(50))


def test_mnist5k_padding_is_zero(mnist5k_test):
    border = mnist5k_test.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.count_nonzero().item() == 0
    assert mnist5k_test.images[:, :, 2:30, 2:30].count_nonzero().item() > 0


def test_mnist5k_rgb_and_64px(mnist5k_test, mnist5k_cache):
    rgb = load_dataset("mnist5k:test", 32, 3, cache_dir=mnist5k_cache)
    assert rgb.images.shape == (500, 3, 32, 32)
    assert torch.equal(rgb.images, mnist5k_test.images.expand(-1, 3, -1, -1))
    big = load_dataset("mnist5k:test", 64, 3, cache_dir=mnist5k_cache)
    assert big.images.shape == (500, 3, 64, 64) and big.images.dtype == torch.uint8
    assert torch.equal(big.labels, mnist5k_test.labels)
    assert torch.equal(big.images[:, 0], big.images[:, 2])
    # upscaled from the padded 32 px digit: the border stays black, the digit has the same mean brightness
    assert big.images[:, :, :2].count_nonzero().item() == 0
    mean32 = mnist5k_test.images.double().mean()
    assert abs(big.images.double().mean() - mean32) < 0.03 * mean32
    small = load_dataset("mnist5k:test", 16, 1, cache_dir=mnist5k_cache)
    assert small.images.shape == (500, 1, 16, 16)


# ---------------------------------------------------------------------------------------------------------------
# torchvision datasets in their on-disk formats


def write_idx(path, array: np.ndarray) -> None:
    """IDX (SN3 "Pascal Vincent") file: magic 0x0000 08 ndim (uint8), big-endian int32 dims, then the bytes."""
    magic = 0x0800 | array.ndim
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) +
                     array.astype(np.uint8).tobytes())


def write_mnist_like(raw, splits):
    raw.mkdir(parents=True)
    for prefix, (images, labels) in splits.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def test_idx_magic_numbers(tmp_path):
    write_idx(tmp_path / "i", np.zeros((1, 28, 28), np.uint8))
    write_idx(tmp_path / "l", np.zeros((1,), np.uint8))
    assert struct.unpack(">I", (tmp_path / "i").read_bytes()[:4])[0] == 2051
    assert struct.unpack(">I", (tmp_path / "l").read_bytes()[:4])[0] == 2049


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_idx_files_round_trip(tmp_path, name, folder):
    train = (RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8), np.array([3, 1, 4, 1, 5, 9, 2], np.uint8))
    test = (RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([6, 5, 3], np.uint8))
    write_mnist_like(tmp_path / "root" / folder / "raw", {"train": train, "t10k": test})
    cache = tmp_path / "cache"
    for spec, (images, labels) in ((name, train), (f"{name}:train", train), (f"{name}:test", test)):
        loaded = load_dataset(spec, 32, 0, str(tmp_path / "root"), cache_dir=cache)
        assert loaded.images.shape == (len(labels), 1, 32, 32) and loaded.num_classes == 10
        assert np.array_equal(loaded.images.numpy(), pad28(images))
        assert torch.equal(loaded.labels, torch.from_numpy(labels.astype(np.int64)))
    rgb = load_dataset(f"{name}:test", 32, 3, str(tmp_path / "root"), cache_dir=cache)
    assert np.array_equal(rgb.images.numpy(), np.repeat(pad28(test[0]), 3, axis=1))


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_legacy_pt_files_run_nothing_and_are_checked(tmp_path, name, folder):
    """torchvision reads the processed/*.pt files of its old versions with torch.load(weights_only=True): a pickle
    that would run a command is refused (one line, nothing run); plain tensors of the wrong shape are one line too."""
    processed = tmp_path / "root" / folder / "processed"
    processed.mkdir(parents=True)
    marker = tmp_path / "marker"
    for file in ("training.pt", "test.pt"):
        torch.save(RunsACommand(marker), processed / file)
    with pytest.raises(UsageError) as error:
        load_dataset(f"{name}:test", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    assert "refusing to unpickle it" in one_line(error) and "posix.system" in str(error.value)
    assert not marker.exists()
    for data, targets, words in ((torch.zeros(3, dtype=torch.uint8), torch.zeros(3), ["images", "(N, 28, 28)"]),
                                 (torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([1, 12]), ["labels", "0..9"]),
                                 (torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([1]), ["2 integers"])):
        for file in ("training.pt", "test.pt"):
            torch.save((data, targets), processed / file)
        with pytest.raises(UsageError) as error:
            load_dataset(f"{name}:test", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
        message = one_line(error)
        assert message.startswith(f"dataset {name} in ") and all(word in message for word in words), message


def test_mnist_idx_file_with_a_bad_header_is_one_line(tmp_path):
    write_mnist_like(tmp_path / "root" / "MNIST" / "raw", {"train": (np.zeros((1, 28, 28), np.uint8), np.zeros(1)),
                                                          "t10k": (np.zeros((1, 28, 28), np.uint8), np.zeros(1))})
    (tmp_path / "root" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">I", 0x0807) + b"\0" * 64)
    with pytest.raises(UsageError) as error:
        load_dataset("mnist:test", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    assert "dataset mnist" in one_line(error) and "corrupt" in str(error.value)


def py2_pickle(entry: dict) -> bytes:
    """`entry` (str keys; values str, int, lists of those, 2-D uint8 arrays) as Python 2's cPickle wrote the real
    cifar-10-batches-py files: protocol 2, byte strings as BINSTRING, arrays through numpy.core.multiarray."""
    def string(text) -> bytes:
        raw = text if isinstance(text, bytes) else text.encode("latin1")
        return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))) + raw

    def integer(number: int) -> bytes:
        return b"K" + bytes([number]) if 0 <= number < 256 else b"J" + struct.pack("<i", number)

    def value(item) -> bytes:
        if isinstance(item, np.ndarray):
            dtype = (b"cnumpy\ndtype\n" + string("u1") + integer(0) + integer(1) + b"\x87R(" + integer(3)
                     + string("|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb")
            shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in item.shape) + b"t"
            return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string("b")
                    + b"\x87R(" + integer(1) + shape + dtype + b"\x89" + string(item.tobytes()) + b"tb")
        if isinstance(item, list):
            return b"](" + b"".join(value(v) for v in item) + b"e"
        return integer(item) if isinstance(item, int) else string(item)

    return b"\x80\x02}(" + b"".join(string(k) + value(v) for k, v in entry.items()) + b"u."


def write_cifar10(folder, batches, dumps=lambda entry: pickle.dumps(entry, protocol=2)):
    """cifar-10-batches-py: pickled dicts as the real files load under pickle.load(encoding="latin1") (`dumps`: how
    each is pickled)."""
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (images, labels) in zip(names, batches):
        entry = {"batch_label": name, "labels": [int(v) for v in labels],
                 "data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),  # rows of R plane, G, B
                 "filenames": [f"img_{i}.png" for i in range(len(labels))]}
        (folder / name).write_bytes(dumps(entry))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck"], "num_cases_per_batch": 10000, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(dumps(meta))


def cifar10_batches(sizes=(2, 3, 1, 2, 2, 4)):
    """Six batches (five train, one test) of HWC images, as in the CIFAR layout after reshape+transpose."""
    return [(RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), RNG.integers(0, 10, n)) for n in sizes]


def test_cifar10_round_trip(tmp_path):
    batches = cifar10_batches()
    write_cifar10(tmp_path / "root" / "cifar-10-batches-py", batches)
    root, cache = str(tmp_path / "root"), tmp_path / "cache"
    train = load_dataset("cifar10", 32, 0, root, cache_dir=cache)
    train_images = np.concatenate([b[0] for b in batches[:5]])
    assert train.images.shape == (10, 3, 32, 32) and train.num_classes == 10
    assert np.array_equal(train.images.numpy(), train_images.transpose(0, 3, 1, 2))
    assert torch.equal(train.labels, torch.from_numpy(np.concatenate([b[1] for b in batches[:5]])))
    test = load_dataset("cifar10:test", 32, 0, root, cache_dir=cache)
    assert np.array_equal(test.images.numpy(), batches[5][0].transpose(0, 3, 1, 2))
    assert torch.equal(test.labels, torch.from_numpy(batches[5][1]))
    # 16 px: the same PIL resize of each 32 px image
    small = load_dataset("cifar10:test", 16, 0, root, cache_dir=cache)
    assert small.images.shape == (4, 3, 16, 16)
    for image, got in zip(batches[5][0], small.images):
        expected = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BICUBIC))
        assert np.array_equal(got.numpy(), expected.transpose(2, 0, 1))
    gray = load_dataset("cifar10:test", 32, 1, root, cache_dir=cache)
    expected = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in batches[5][0]])
    assert np.array_equal(gray.images[:, 0].numpy(), expected)


@pytest.mark.parametrize("dumps", [py2_pickle, lambda entry: pickle.dumps(entry, protocol=4),
                                   lambda entry: pickle.dumps(entry, protocol=5)], ids=["python2", "protocol4",
                                                                                        "protocol5"])
def test_cifar10_pickle_formats_all_load(tmp_path, dumps):
    """The real files (Python 2 pickles naming numpy.core.multiarray) and those Python 3 writes pass the restricted
    unpickler: the same images and labels."""
    batches = cifar10_batches()
    write_cifar10(tmp_path / "root" / "cifar-10-batches-py", batches, dumps)
    loaded = load_dataset("cifar10:test", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    assert np.array_equal(loaded.images.numpy(), batches[5][0].transpose(0, 3, 1, 2))
    assert torch.equal(loaded.labels, torch.from_numpy(batches[5][1]))
    train = load_dataset("cifar10:train", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    assert torch.equal(train.labels, torch.from_numpy(np.concatenate([b[1] for b in batches[:5]])))


class RunsACommand:
    """Unpickles by calling os.system: what a hostile cifar-10-batches-py file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


class OpensAFile:
    """Unpickles by calling open(marker, "w"): creates the marker without a shell."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def hostile_cifar10(root, marker, name: str, payload=RunsACommand) -> None:
    """A cifar-10-batches-py under `root` whose file `name` is a pickle that creates `marker` when unpickled."""
    write_cifar10(root / "cifar-10-batches-py", cifar10_batches())
    (root / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(payload(marker), protocol=2))


@pytest.mark.parametrize("name, split", [("data_batch_1", "train"), ("test_batch", "test"), ("batches.meta", "test")])
@pytest.mark.parametrize("payload", [RunsACommand, OpensAFile])
def test_cifar10_hostile_pickle_runs_nothing(tmp_path, name, split, payload):
    marker = tmp_path / "marker"
    hostile_cifar10(tmp_path / "root", marker, name, payload)
    with pytest.raises(UsageError) as error:
        load_dataset(f"cifar10:{split}", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    message = one_line(error)
    assert not marker.exists()
    assert str(tmp_path / "root" / "cifar-10-batches-py" / name) in message
    assert "objects other than arrays, lists and dicts" in message and "refusing to unpickle" in message


def test_cifar10_hostile_pickle_through_the_cli(tmp_path):
    """`genvision stats cifar10:test --data-root DIR` (as the issue reproduced it): exit 2, one line, nothing run or
    written."""
    from helpers import assert_one_line_error, cli

    marker = tmp_path / "marker"
    hostile_cifar10(tmp_path / "root", marker, "test_batch")
    code, stdout, stderr = cli("stats", "cifar10:test", "--data-root", tmp_path / "root", "--features", "classifier",
                               "--output", tmp_path / "x.npz")
    assert_one_line_error(code, stderr, "test_batch", "refusing to unpickle", command="stats")
    assert stdout == "" and not marker.exists() and not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("entry, words", [
    ([1, 2, 3], ["holds a list", "expected a dict"]),
    ({"labels": [1, 2]}, ["'data'", "NoneType", "uint8 array (N, 3072)"]),
    ({"data": np.zeros((2, 3072), np.float32), "labels": [1, 2]}, ["float32 (2, 3072)", "uint8 array (N, 3072)"]),
    ({"data": np.zeros((2, 1024), np.uint8), "labels": [1, 2]}, ["uint8 (2, 1024)"]),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [1]}, ["'labels'", "1 values", "2 integers in 0..9"]),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 10]}, ["'labels'", "2 integers in 0..9"]),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": "ab"}, ["'labels'", "str"]),
    (b"\x80\x02}(U\x04data", ["not a CIFAR-10 pickle"]),  # truncated
])
def test_cifar10_batch_of_the_wrong_shape_is_one_line(tmp_path, entry, words):
    write_cifar10(tmp_path / "root" / "cifar-10-batches-py", cifar10_batches())
    batch = tmp_path / "root" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(entry if isinstance(entry, bytes) else pickle.dumps(entry, protocol=2))
    with pytest.raises(UsageError) as error:
        load_dataset("cifar10:test", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    message = one_line(error)
    assert message.startswith("dataset cifar10: ") and str(batch) in message
    assert all(word in message for word in words), message


def test_cifar10_meta_of_the_wrong_shape_is_one_line(tmp_path):
    write_cifar10(tmp_path / "root" / "cifar-10-batches-py", cifar10_batches())
    meta = tmp_path / "root" / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": 10}, protocol=2))
    with pytest.raises(UsageError) as error:
        load_dataset("cifar10:test", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    assert "'label_names' of" in one_line(error) and "list of strings" in str(error.value)


def test_svhn_round_trip(tmp_path):
    from scipy.io import savemat

    n = 5
    x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)  # 10 is the digit 0
    (tmp_path / "root" / "svhn").mkdir(parents=True)
    savemat(tmp_path / "root" / "svhn" / "train_32x32.mat", {"X": x, "y": y})
    loaded = load_dataset("svhn", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    assert loaded.images.shape == (n, 3, 32, 32) and loaded.num_classes == 10
    assert np.array_equal(loaded.images.numpy(), x.transpose(3, 2, 0, 1))
    assert loaded.labels.tolist() == [0, 1, 2, 0, 9]
    with pytest.raises(UsageError) as missing:  # the test split's file is absent
        load_dataset("svhn:test", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache", offer_download=True)
    assert "svhn" in one_line(missing) and "--download" in str(missing.value)


@pytest.mark.parametrize("x, y, words", [
    (RNG.random((32, 32, 3, 3)), [[1], [2], [3]], ["'X'", "float64 (32, 32, 3, 3)", "expected uint8 (32, 32, 3, N)"]),
    (np.zeros((16, 16, 3, 3), np.uint8), [[1], [2], [3]], ["'X'", "uint8 (16, 16, 3, 3)"]),
    (np.zeros((32, 32, 3, 3), np.uint8), [[1], [2]], ["'y'", "2 values", "expected 3 digits in 1..10"]),
    (np.zeros((32, 32, 3, 3), np.uint8), [[1], [2], [11]], ["'y'", "from 1 to 11"]),
])
def test_svhn_malformed_mat_is_one_line(tmp_path, x, y, words):
    """scipy.io.loadmat reads plain data (no code runs); what it reads is checked before a pixel is decoded."""
    from scipy.io import savemat

    (tmp_path / "root" / "svhn").mkdir(parents=True)
    savemat(tmp_path / "root" / "svhn" / "train_32x32.mat", {"X": x, "y": np.array(y, dtype=np.uint8)})
    with pytest.raises(UsageError) as error:
        load_dataset("svhn", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    message = one_line(error)
    assert message.startswith("dataset svhn: ") and "train_32x32.mat" in message
    assert all(word in message for word in words), message
    assert not (tmp_path / "cache").exists()


def test_svhn_matlab_73_file_is_corrupt_not_missing(tmp_path):
    """scipy reads MATLAB 5 files only; a 7.3 (HDF5) file is named as unreadable, not as missing."""
    (tmp_path / "root" / "svhn").mkdir(parents=True)
    header = b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM"
    (tmp_path / "root" / "svhn" / "train_32x32.mat").write_bytes(header + b"\0" * 512)
    with pytest.raises(UsageError) as error:
        load_dataset("svhn", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    assert "is corrupt or truncated: NotImplementedError" in one_line(error)


CELEBA_COLOURS = [(200, 30, 40), (20, 180, 60), (30, 60, 220), (250, 250, 250), (0, 0, 0), (128, 64, 32),
                  (90, 200, 200)]
CELEBA_SPLITS = [0, 0, 0, 1, 1, 2, 2]


def write_celeba(folder) -> None:
    images = folder / "img_align_celeba"
    images.mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(CELEBA_COLOURS))]
    for name, colour in zip(names, CELEBA_COLOURS):
        Image.new("RGB", (178, 218), colour).save(images / name, quality=95)
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, CELEBA_SPLITS)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} {i + 100}\n" for i, n in enumerate(names)))
    attributes = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Smiling"] + [f"Attr_{i}" for i in range(37)]
    (folder / "list_attr_celeba.txt").write_text(
        f"{len(names)}\n" + " ".join(attributes) + "\n" +
        "".join(f"{n} " + " ".join("1" if (i + j) % 2 else "-1" for j in range(40)) + "\n"
                for i, n in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{len(names)}\nimage_id x_1 y_1 width height\n" + "".join(f"{n} 95 71 226 313\n" for n in names))
    landmarks = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x " \
                "rightmouth_y"
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{len(names)}\n{landmarks}\n" + "".join(f"{n} 69 109 106 113 77 142 73 152 108 154\n" for n in names))


def test_celeba_round_trip(tmp_path):
    write_celeba(tmp_path / "root" / "celeba")
    root, cache = str(tmp_path / "root"), tmp_path / "cache"
    for split, code in (("train", 0), ("valid", 1), ("test", 2), ("all", None)):
        loaded = load_dataset(f"celeba:{split}", 32, 0, root, cache_dir=cache)
        colours = [c for c, s in zip(CELEBA_COLOURS, CELEBA_SPLITS) if code is None or s == code]
        assert loaded.images.shape == (len(colours), 3, 32, 32) and loaded.num_classes == 1
        assert loaded.labels.tolist() == [0] * len(colours)
        expected = torch.tensor(colours, dtype=torch.float32)[:, :, None, None].expand(-1, -1, 32, 32)
        torch.testing.assert_close(loaded.images.float(), expected, atol=4, rtol=0)  # JPEG tolerance
    assert len(load_dataset("celeba", 32, 0, root, cache_dir=cache)) == 3  # default split: train
    assert load_dataset("celeba:valid", 64, 1, root, cache_dir=cache).images.shape == (2, 1, 64, 64)


@pytest.mark.parametrize("name", ["../outside.jpg", "ABSOLUTE", "sub/000001.jpg"])
def test_celeba_image_names_stay_in_img_align_celeba(tmp_path, name):
    """list_eval_partition.txt names the image files; a name that leaves img_align_celeba/ is refused in one line."""
    folder = tmp_path / "root" / "celeba"
    write_celeba(folder)
    outside = folder / "outside.jpg"
    Image.new("RGB", (178, 218), (1, 2, 3)).save(outside)
    (folder / "img_align_celeba" / "sub").mkdir()
    Image.new("RGB", (178, 218), (1, 2, 3)).save(folder / "img_align_celeba" / "sub" / "000001.jpg")
    name = str(outside) if name == "ABSOLUTE" else name
    partition = folder / "list_eval_partition.txt"
    partition.write_text(partition.read_text().replace("000001.jpg", name, 1))
    with pytest.raises(UsageError) as error:
        load_dataset("celeba", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    message = one_line(error)
    assert "list_eval_partition.txt" in message and repr(name) in message and "img_align_celeba/" in message


def test_celeba_fifo_is_refused(tmp_path):
    import os

    folder = tmp_path / "root" / "celeba"
    write_celeba(folder)
    (folder / "img_align_celeba" / "000002.jpg").unlink()
    os.mkfifo(folder / "img_align_celeba" / "000002.jpg")  # a read would block until someone writes
    with pytest.raises(UsageError) as error:
        load_dataset("celeba", 32, 0, str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    assert one_line(error) == f"cannot read image {folder / 'img_align_celeba' / '000002.jpg'}: not a regular file"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "svhn", "celeba"])
def test_torchvision_dataset_absent_offline(tmp_path, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError) as error:  # a training command: it has --download
        load_dataset(name, 32, 0, str(empty), download=False, cache_dir=tmp_path / "cache", offer_download=True)
    message = one_line(error)
    assert name in message and str(empty.resolve()) in message and "--download" in message
    assert error.value.exit_code == 2
    assert list(empty.iterdir()) == [] and not (tmp_path / "cache").exists()
    with pytest.raises(UsageError) as error:  # `genvision fid` and the like have no --download: none suggested
        load_dataset(name, 32, 0, str(empty), download=False, cache_dir=tmp_path / "cache")
    assert one_line(error) == f"dataset {name} not found in {empty.resolve()}; point --data-root at the folder that " \
                              "holds it"


@pytest.mark.parametrize("spec, words", [("nope", ["nope", "mnist5k", "cifar10", "folder:PATH"]),
                                         ("mnist5k:valid", ["valid", "train", "test"]),
                                         ("celeba:extra", ["extra", "valid"]),
                                         ("folder:", ["folder:", "path"])])
def test_bad_specs(tmp_path, spec, words):
    with pytest.raises(UsageError) as error:
        load_dataset(spec, 32, 0, cache_dir=tmp_path)
    message = one_line(error)
    assert all(word in message for word in words)


def test_spec_parse_and_str():
    assert str(DatasetSpec.parse("svhn:extra")) == "svhn:extra"
    assert DatasetSpec.parse("folder:a:b/c") == DatasetSpec("folder", "all", "a:b/c")
    assert str(DatasetSpec.parse("folder:imgs")) == "folder:imgs"
    assert str(DatasetSpec.parse("cifar10")) == "cifar10:train"


# ---------------------------------------------------------------------------------------------------------------
# folder:PATH


def save(path, array, mode=None, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode) if isinstance(array, np.ndarray) else array
    image.save(path, **kwargs)
    return path


def solid(colour, size=(16, 16)):
    return np.full((size[1], size[0], 3), colour, dtype=np.uint8)


def pil_luma(rgb) -> int:
    """PIL's RGB -> L: L = R*299/1000 + G*587/1000 + B*114/1000, in 16-bit fixed point, rounded."""
    r, g, b = rgb
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def test_pil_luma_matches_pil():
    for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 200, 77), (255, 255, 255), (1, 2, 3)]:
        assert pil_luma(colour) == Image.new("RGB", (1, 1), colour).convert("L").getpixel((0, 0))


def test_folder_class_subfolders(tmp_path):
    # class names sorted: "cat" -> 0, "dog" -> 1, "zebra" -> 2, whatever the creation order
    root = tmp_path / "imgs"
    save(root / "zebra" / "a.png", solid((0, 0, 255)))
    save(root / "cat" / "b.png", solid((255, 0, 0)))
    save(root / "cat" / "a.jpg", solid((250, 0, 0)), quality=95)
    save(root / "dog" / "nested" / "c.bmp", solid((0, 255, 0)))
    save(root / "dog" / "d.WEBP", solid((0, 250, 0)), lossless=True)
    (root / "dog" / "notes.txt").write_text("not an image")
    loaded = load_dataset(f"folder:{root}", 16, 0, cache_dir=tmp_path / "cache")
    assert loaded.num_classes == 3 and loaded.images.shape == (5, 3, 16, 16)
    # files in sorted path order: cat/a.jpg, cat/b.png, dog/d.WEBP, dog/nested/c.bmp, zebra/a.png
    assert loaded.labels.tolist() == [0, 0, 1, 1, 2]
    expected = torch.tensor([(250, 0, 0), (255, 0, 0), (0, 250, 0), (0, 255, 0), (0, 0, 255)],
                            dtype=torch.float32)[:, :, None, None].expand(-1, -1, 16, 16)
    torch.testing.assert_close(loaded.images.float(), expected, atol=3, rtol=0)
    assert torch.equal(loaded.images[1:], expected[1:].to(torch.uint8))  # lossless formats are exact


def test_folder_flat_or_mixed_gives_label_zero(tmp_path):
    save(tmp_path / "flat" / "a.png", solid((1, 2, 3)))
    save(tmp_path / "flat" / "b.png", solid((4, 5, 6)))
    flat = load_dataset(f"folder:{tmp_path / 'flat'}", 16, 0, cache_dir=tmp_path / "cache")
    assert flat.labels.tolist() == [0, 0] and flat.num_classes == 1
    save(tmp_path / "mixed" / "top.png", solid((1, 2, 3)))
    save(tmp_path / "mixed" / "sub" / "x.png", solid((4, 5, 6)))
    mixed = load_dataset(f"folder:{tmp_path / 'mixed'}", 16, 0, cache_dir=tmp_path / "cache")
    assert mixed.labels.tolist() == [0, 0] and mixed.num_classes == 1


def test_folder_image_modes(tmp_path):
    red, teal = (200, 30, 40), (10, 150, 140)
    folder = tmp_path / "modes"
    save(folder / "1_rgb.png", solid(red))
    save(folder / "2_gray.png", np.full((16, 16), 77, np.uint8), "L")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[...] = (*teal, 90)  # partly transparent: the colour is kept, alpha dropped
    save(folder / "3_rgba.png", rgba, "RGBA")
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, *red] + [0] * 762)
    save(folder / "4_palette.png", palette)
    transparent = Image.new("P", (16, 16), 2)
    transparent.putpalette([0, 0, 0, 0, 0, 0, *teal] + [0] * 759)
    save(folder / "5_palette_trns.png", transparent, transparency=0)
    save(folder / "6_gray_alpha.png", np.dstack([np.full((16, 16), 60, np.uint8), np.full((16, 16), 9, np.uint8)]),
         "LA")
    colours = [red, (77, 77, 77), teal, red, teal, (60, 60, 60)]
    cache = tmp_path / "cache"

    rgb = load_dataset(f"folder:{folder}", 16, 3, cache_dir=cache)
    assert rgb.images.shape == (6, 3, 16, 16)
    assert torch.equal(rgb.images, torch.tensor(colours, dtype=torch.uint8)[:, :, None, None].expand(-1, -1, 16, 16))
    gray = load_dataset(f"folder:{folder}", 16, 1, cache_dir=cache)
    assert gray.images.shape == (6, 1, 16, 16)
    lumas = [pil_luma(c) for c in colours]
    assert torch.equal(gray.images, torch.tensor(lumas, dtype=torch.uint8)[:, None, None, None].expand(-1, 1, 16, 16))
    # native channels come from the first image: RGB here, L for a folder whose first image is gray
    assert load_dataset(f"folder:{folder}", 16, 0, cache_dir=cache).images.shape[1] == 3
    save(tmp_path / "grayfirst" / "a.png", np.full((16, 16), 5, np.uint8), "L")
    save(tmp_path / "grayfirst" / "b.png", solid(red))
    first_gray = load_dataset(f"folder:{tmp_path / 'grayfirst'}", 16, 0, cache_dir=cache)
    assert first_gray.images.shape == (2, 1, 16, 16)
    assert first_gray.images[:, 0, 0, 0].tolist() == [5, pil_luma(red)]


def test_folder_non_square_resize_and_center_crop(tmp_path):
    blue, red, green = (0, 0, 255), (255, 0, 0), (0, 255, 0)
    wide = solid(blue, (40, 20))  # 40 x 20: resized to 32 x 16, the middle 16 columns (original 10..30) kept
    wide[:, 6:34] = red
    tall = solid(green, (20, 40))
    tall[6:34, :] = red
    save(tmp_path / "imgs" / "a_wide.png", wide)
    save(tmp_path / "imgs" / "b_tall.png", tall)
    loaded = load_dataset(f"folder:{tmp_path / 'imgs'}", 16, 3, cache_dir=tmp_path / "cache")
    assert loaded.images.shape == (2, 3, 16, 16)
    expected = torch.tensor(red, dtype=torch.float32)[:, None, None].expand(3, 16, 16)
    torch.testing.assert_close(loaded.images[0].float(), expected, atol=1, rtol=0)
    torch.testing.assert_close(loaded.images[1].float(), expected, atol=1, rtol=0)
    # upscaling a small non-square image fills the whole square, no padding
    save(tmp_path / "small" / "s.png", solid(green, (10, 6)))
    up = load_dataset(f"folder:{tmp_path / 'small'}", 32, 3, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(up.images[0].float(),
                               torch.tensor(green, dtype=torch.float32)[:, None, None].expand(3, 32, 32),
                               atol=1, rtol=0)
    # 28 x 28 images from a folder are padded to 32 like MNIST digits
    digit = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    save(tmp_path / "digits" / "d.png", digit, "L")
    padded = load_dataset(f"folder:{tmp_path / 'digits'}", 32, 1, cache_dir=tmp_path / "cache")
    assert np.array_equal(padded.images.numpy(), pad28(digit[None]))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_prepare_image_pads_28px_digits_by_the_rule_every_source_follows(mode):
    """`prepare_image` (training, dataset specs) and `resize_for_extractor` (folders, generators) give a 28-px digit
    the same pixels: both follow `imageconv.pad_digits`."""
    from genvision.imageconv import pad_digits
    from genvision.metrics.extractors import resize_for_extractor

    channels = 1 if mode == "L" else 3
    array = RNG.integers(0, 256, (28, 28) if mode == "L" else (28, 28, 3), dtype=np.uint8)
    image = torch.from_numpy(array)[None] if mode == "L" else torch.from_numpy(array).permute(2, 0, 1)
    prepared = data.prepare_image(Image.fromarray(array, mode), 32, channels)
    assert np.array_equal(prepared, pad_digits(image, 32).numpy())
    assert np.array_equal(prepared, resize_for_extractor(image[None], 32, channels)[0].numpy())
    assert np.array_equal(data.prepare_image(Image.fromarray(array, mode), 28, channels),
                          image.numpy())  # below 32 px the digit is kept as it is


def test_folder_errors(tmp_path):
    cache = tmp_path / "cache"
    missing = tmp_path / "does-not-exist"
    with pytest.raises(UsageError) as error:
        load_dataset(f"folder:{missing}", 16, 0, cache_dir=cache)
    assert str(missing) in one_line(error)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(UsageError) as error:
        load_dataset(f"folder:{tmp_path / 'file.png'}", 16, 0, cache_dir=cache)
    assert "file.png" in one_line(error)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(UsageError) as error:
        load_dataset(f"folder:{empty}", 16, 0, cache_dir=cache)
    assert str(empty) in one_line(error) and "no images" in str(error.value)
    assert not cache.exists()


def test_folder_corrupt_images(tmp_path):
    cache = tmp_path / "cache"
    garbage = tmp_path / "garbage"
    save(garbage / "a.png", solid((1, 2, 3)))
    (garbage / "x.png").write_bytes(b"this is not a png" * 10)
    with pytest.raises(UsageError) as error:
        load_dataset(f"folder:{garbage}", 16, 0, cache_dir=cache)
    assert str(garbage / "x.png") in one_line(error)

    # the first image (which also decides the native channels) is the broken one
    first = tmp_path / "first"
    (first / "a.png").parent.mkdir()
    (first / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    save(first / "b.png", solid((1, 2, 3)))
    with pytest.raises(UsageError) as error:
        load_dataset(f"folder:{first}", 16, 0, cache_dir=cache)
    assert str(first / "a.png") in one_line(error)

    truncated = tmp_path / "truncated"
    save(truncated / "a.png", solid((1, 2, 3)))
    whole = save(tmp_path / "whole.png", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).read_bytes()
    (truncated / "t.png").write_bytes(whole[:len(whole) // 2])
    for channels in (0, 1, 3):
        with pytest.raises(UsageError) as error:
            load_dataset(f"folder:{truncated}", 16, channels, cache_dir=cache)
        assert str(truncated / "t.png") in one_line(error)
    assert not cache.exists() or not any(cache.iterdir())


# PIL warns above its limit (6000 < 10000 pixels) and refuses above twice it (4096): genvision refuses both, with the
# same line whether PIL's warning is an error (genvision.imagefile's filter, as in a genvision process) or not.
@pytest.mark.parametrize("limit, action", [(6000, "error"), (6000, "ignore"), (4096, "ignore")])
def test_folder_decompression_bomb_is_one_line(tmp_path, monkeypatch, limit, action):
    """An image over PIL.Image.MAX_IMAGE_PIXELS (lowered here: a 100 x 100 PNG stands for a 12000 x 12000 one) is
    refused before it is decoded, at any position in the folder."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    for first in (True, False):
        folder = tmp_path / f"bomb-first-{first}"
        save(folder / "b.png", solid((1, 2, 3), (20, 20)))
        Image.new("1", (100, 100)).save(folder / ("a.png" if first else "c.png"))
        with pytest.raises(UsageError) as error, warnings.catch_warnings():
            warnings.simplefilter(action, Image.DecompressionBombWarning)
            load_dataset(f"folder:{folder}", 16, 0, cache_dir=tmp_path / "cache")
        assert one_line(error) == (f"cannot read image {folder / ('a.png' if first else 'c.png')}: 10000 pixels "
                                   f"exceeds the limit of {limit} pixels per image (PIL.Image.MAX_IMAGE_PIXELS); "
                                   "refusing a possible decompression bomb")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("user_limit", [None, 5000])
def test_genvision_sets_the_pixel_limit_at_its_first_image_not_at_import(tmp_path, user_limit):
    """In a fresh process: importing genvision leaves PIL's limit alone; its first image lowers PIL's default to
    8192 x 8192 pixels, and keeps a limit the user set."""
    from helpers import run_python

    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    user = "" if user_limit is None else f"PIL.Image.MAX_IMAGE_PIXELS = {user_limit}; "
    code = (f"import PIL.Image, genvision.imagefile as f; {user}before = PIL.Image.MAX_IMAGE_PIXELS; "
            f"f.decoded({str(tmp_path / 'a.png')!r}, 'a.png'); print(before, PIL.Image.MAX_IMAGE_PIXELS)")
    result = run_python(["-c", code])
    assert result.returncode == 0, result.stderr
    before, after = map(int, result.stdout.split())
    if user_limit is None:
        assert (before, after) == (89478485, 8192 * 8192)
    else:
        assert before == after == user_limit


# ---------------------------------------------------------------------------------------------------------------
# The cache


def make_folder(root, n=12, size=20, classes=3):
    for i in range(n):
        save(root / f"class{i % classes}" / f"{i:03d}.png", RNG.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return f"folder:{root}"


class DecodeCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        self.real = data.decode_all
        monkeypatch.setattr(data, "decode_all", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def test_cache_hit_miss_and_names(tmp_path, monkeypatch, mnist5k_test):
    cache = tmp_path / "cache"
    counter = DecodeCounter(monkeypatch)
    first = load_dataset("mnist5k:test", 32, 0, cache_dir=cache)
    assert counter.calls == 1
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1
    name = files[0]
    assert all(part in name for part in ("mnist5k", "test", "32px", "1ch")) and name.endswith(".safetensors")

    second = load_dataset("mnist5k:test", 32, 0, cache_dir=cache)
    assert counter.calls == 1  # a hit: no decoding
    assert torch.equal(second.images, first.images) and torch.equal(second.labels, first.labels)
    assert torch.equal(second.images, mnist5k_test.images)
    assert second.num_classes == 10 and second.spec == "mnist5k:test"

    monkeypatch.setattr(data, "decode_all", lambda *a, **k: pytest.fail("decoded again on a cache hit"))
    load_dataset("mnist5k:test", 32, 1, cache_dir=cache)  # channels 1 is the native count: same file
    monkeypatch.setattr(data, "decode_all", counter)

    load_dataset("mnist5k:test", 16, 0, cache_dir=cache)
    load_dataset("mnist5k:test", 32, 3, cache_dir=cache)
    assert counter.calls == 3
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 3
    assert any("16px" in n and "1ch" in n for n in names) and any("32px" in n and "3ch" in n for n in names)
    assert not any(n.endswith(".tmp") or n.startswith(".") for n in names)  # atomic: no temp files left
    # the other split is a different file
    assert data.cache_path(DatasetSpec.parse("mnist5k:train"), 32, 1, "", cache).name != name


def test_cache_corrupt_file_is_rebuilt(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    spec = make_folder(tmp_path / "imgs")
    counter = DecodeCounter(monkeypatch)
    good = load_dataset(spec, 16, 0, cache_dir=cache)
    (path,) = list(cache.iterdir())
    assert path.name.startswith("folder-16px-3ch-")
    for corruption in (b"garbage", path.read_bytes()[: path.stat().st_size // 2], b""):
        path.write_bytes(corruption)
        rebuilt = load_dataset(spec, 16, 0, cache_dir=cache)
        assert torch.equal(rebuilt.images, good.images) and torch.equal(rebuilt.labels, good.labels)
    assert counter.calls == 4
    load_dataset(spec, 16, 0, cache_dir=cache)
    assert counter.calls == 4  # the rebuilt file is valid again
    assert [p.name for p in cache.iterdir()] == [path.name]


def test_cache_folder_change_misses(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    spec = make_folder(tmp_path / "imgs", n=6)
    counter = DecodeCounter(monkeypatch)
    before = load_dataset(spec, 16, 0, cache_dir=cache)
    save(tmp_path / "imgs" / "class0" / "new.png", solid((9, 9, 9), (20, 20)))
    after = load_dataset(spec, 16, 0, cache_dir=cache)
    assert counter.calls == 2 and len(after) == len(before) + 1
    assert len(list(cache.iterdir())) == 2


def test_cache_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GENVISION_CACHE", str(tmp_path / "envcache"))
    assert data.default_cache_dir() == tmp_path / "envcache"
    spec = make_folder(tmp_path / "imgs", n=3)
    load_from_config(DataConfig(dataset=spec, resolution=16))
    assert len(list((tmp_path / "envcache").iterdir())) == 1


# ---------------------------------------------------------------------------------------------------------------
# Batches


def synthetic(n=40, channels=1, size=6, seed=0) -> ImageData:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=generator, dtype=torch.uint8)
    return ImageData(images, torch.arange(n), n, "synthetic")


def take(batches, count):
    return [next(batches) for _ in range(count)]


def test_in_memory_values_and_epoch_coverage():
    source = synthetic(42)
    batches = InMemoryBatches(source, 4, seed=3)
    assert len(batches) == 10  # 42 // 4, the last partial batch dropped
    seen = []
    for images, labels in take(batches, 10):
        assert images.dtype == torch.float32 and images.shape == (4, 1, 6, 6)
        assert images.min() >= -1 and images.max() <= 1
        torch.testing.assert_close(images, to_model_range(source.images[labels]), rtol=0, atol=0)
        seen += labels.tolist()
    assert len(set(seen)) == 40 and set(seen) <= set(range(42))
    assert batches.state_dict() == {"epoch": 1, "position": 0}


def test_in_memory_seeded_order():
    source = synthetic()
    a = [labels for _, labels in take(InMemoryBatches(source, 5, seed=1), 16)]
    b = [labels for _, labels in take(InMemoryBatches(source, 5, seed=1), 16)]
    c = [labels for _, labels in take(InMemoryBatches(source, 5, seed=2), 16)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    epoch0, epoch1 = torch.cat(a[:8]), torch.cat(a[8:16])
    assert sorted(epoch0.tolist()) == sorted(epoch1.tolist()) == list(range(40))
    assert not torch.equal(epoch0, epoch1)  # a new permutation each epoch
    assert not torch.equal(epoch0, torch.arange(40))


@pytest.mark.parametrize("world_size, n", [(2, 40), (2, 43), (3, 40)])
def test_in_memory_rank_sharding(world_size, n):
    source = synthetic(n)
    shards = []
    for rank in range(world_size):
        batches = InMemoryBatches(source, 4, seed=5, rank=rank, world_size=world_size)
        per_rank = len(batches)
        assert per_rank == n // (4 * world_size)
        labels = torch.cat([labels for _, labels in take(batches, per_rank)])
        assert batches.state_dict() == {"epoch": 1, "position": 0}
        shards.append(set(labels.tolist()))
        assert len(shards[-1]) == per_rank * 4
    union = set().union(*shards)
    assert sum(len(s) for s in shards) == len(union) == n // (4 * world_size) * 4 * world_size  # disjoint
    # together the ranks see the single-process epoch's images (same permutation, dealt round-robin)
    whole = data.epoch_order(n, 5, 0, 4, 0, 1)[: len(union)]
    assert union == set(whole.tolist())


def test_in_memory_resume():
    source = synthetic()
    reference = InMemoryBatches(source, 6, seed=9, hflip=True)
    first = take(reference, 9)  # into the second epoch (6 batches per epoch)
    state = reference.state_dict()
    assert state == {"epoch": 1, "position": 3}
    expected = take(reference, 8)
    resumed = InMemoryBatches(source, 6, seed=9, hflip=True)
    resumed.load_state_dict(state)
    got = take(resumed, 8)
    for (xi, xl), (yi, yl) in zip(expected, got):
        assert torch.equal(xi, yi) and torch.equal(xl, yl)
    # mid-first-epoch resume too
    resumed.load_state_dict({"epoch": 0, "position": 2})
    for (xi, xl), (yi, yl) in zip(first[2:], take(resumed, 7)):
        assert torch.equal(xi, yi) and torch.equal(xl, yl)


def test_in_memory_hflip():
    source = synthetic(40, channels=3, size=5)
    plain = InMemoryBatches(source, 8, seed=4)
    flipping = InMemoryBatches(source, 8, seed=4, hflip=True)
    again = InMemoryBatches(source, 8, seed=4, hflip=True)
    flipped = kept = 0
    for (pi, pl), (fi, fl), (ai, al) in zip(take(plain, 10), take(flipping, 10), take(again, 10)):
        assert torch.equal(pl, fl) and torch.equal(fi, ai) and torch.equal(fl, al)  # same order, same flips
        original = to_model_range(source.images[fl])
        for image, base in zip(fi, original):
            if torch.equal(image, base):
                kept += 1
            else:
                assert torch.equal(image, base.flip(-1))
                flipped += 1
    assert flipped > 10 and kept > 10


def test_in_memory_bad_batch_sizes():
    source = synthetic(10)
    for bad in (0, -1):
        with pytest.raises(UsageError) as error:
            InMemoryBatches(source, bad)
        assert "--batch-size" in one_line(error)
    with pytest.raises(UsageError) as error:
        InMemoryBatches(source, 6, world_size=2)
    assert "--batch-size" in one_line(error)
    assert len(InMemoryBatches(source, 10)) == 1


def test_streaming_matches_in_memory(tmp_path):
    spec = make_folder(tmp_path / "imgs", n=14, size=20)
    config = DataConfig(dataset=spec, resolution=16, in_memory_limit_gb=0, hflip=True)
    streaming, channels, num_classes = make_batches(config, 3, seed=11)
    assert isinstance(streaming, StreamingBatches) and (channels, num_classes) == (3, 3)
    streaming.num_workers = 0
    data_ = load_from_config(config, tmp_path / "cache")
    memory = InMemoryBatches(data_, 3, seed=11, hflip=True)
    assert len(streaming) == len(memory) == 4
    expected = take(memory, 10)  # across two epoch boundaries
    got = take(streaming, 10)
    for (xi, xl), (yi, yl) in zip(expected, got):
        assert yi.dtype == torch.float32 and yl.dtype == torch.int64
        assert torch.equal(xi, yi) and torch.equal(xl, yl)
    assert streaming.state_dict() == memory.state_dict() == {"epoch": 2, "position": 2}
    # resume the streaming batches mid-epoch
    more = take(memory, 3)
    resumed = StreamingBatches(spec, config, 3, seed=11, num_workers=0)
    resumed.load_state_dict({"epoch": 2, "position": 2})
    for (xi, xl), (yi, yl) in zip(more, take(resumed, 3)):
        assert torch.equal(xi, yi) and torch.equal(xl, yl)
    for bad, world_size in ((0, 1), (-2, 1), (15, 1), (4, 4)):  # <= 0, or more than the 14 images
        with pytest.raises(UsageError) as error:
            StreamingBatches(spec, config, bad, world_size=world_size, num_workers=0)
        assert "--batch-size" in one_line(error)


def test_streaming_items_are_writable_tensors(tmp_path):
    import warnings

    spec = make_folder(tmp_path / "imgs", n=4, size=20)
    for channels in (1, 3):
        config = DataConfig(dataset=spec, resolution=16, channels=channels, in_memory_limit_gb=0)
        batches = StreamingBatches(spec, config, 2, num_workers=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch warns when wrapping PIL's read-only buffers
            image, label = batches.dataset[0]
        assert image.shape == (channels, 16, 16) and image.dtype == torch.uint8
        image[0, 0, 0] = 1  # writable memory of its own
    array = data.prepare_image(Image.new("L", (16, 16), 3), 16, 1)
    assert array.flags.writeable and array.shape == (1, 16, 16)


def test_make_batches_in_memory(tmp_path):
    spec = make_folder(tmp_path / "imgs", n=8, size=20, classes=2)
    batches, channels, num_classes = make_batches(DataConfig(dataset=spec, resolution=16, channels=1), 2, seed=0)
    assert type(batches) is InMemoryBatches and (channels, num_classes) == (1, 2)
    images, labels = next(batches)
    assert images.shape == (2, 1, 16, 16) and labels.shape == (2,)


def test_describe(mnist5k_test):
    import json

    assert json.loads(data.describe(mnist5k_test)) == {"dataset": "mnist5k:test", "images": 500,
                                                      "shape": [1, 32, 32], "classes": 10}


# ---------------------------------------------------------------------------------------------------------------
# Class names (class-conditional training, train-classifier), read without decoding.


def test_class_names_of_each_labelled_source(tmp_path):
    config = DataConfig()
    assert data.class_names("mnist5k", "--dataset", config) == tuple("0123456789")
    assert data.class_names("fashion-mnist:test", "--dataset", config)[-1] == "Ankle boot"
    assert data.class_names("cifar10", "--dataset", config)[:2] == ("airplane", "automobile")
    for name in ("b", "a"):
        write_pngs_to(tmp_path / "labelled" / name)
    assert data.class_names(f"folder:{tmp_path / 'labelled'}", "--dataset", config) == ("a", "b")


def write_pngs_to(folder, count: int = 2) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        Image.fromarray(np.full((8, 8), 40 * index, dtype=np.uint8), "L").save(folder / f"{index}.png")


@pytest.mark.parametrize("layout, words", [("loose", "not in class subfolders"), ("one", "1 class subfolder (x)")])
def test_class_names_refuse_unlabelled_and_one_class_folders(tmp_path, layout, words):
    write_pngs_to(tmp_path / "loose" if layout == "loose" else tmp_path / "one" / "x")
    pattern = r"--dataset folder:.*" + words.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(UsageError, match=pattern) as error:
        data.class_names(f"folder:{tmp_path / layout}", "--dataset", DataConfig(), needs="--conditional")
    assert "\n" not in str(error.value)


def test_class_names_refuse_a_dataset_without_classes():
    with pytest.raises(UsageError, match="celeba has no class labels .* --conditional needs a labelled dataset"):
        data.class_names("celeba", "--dataset", DataConfig(), needs="--conditional")


def test_batches_count_the_images_of_each_class():
    images = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    batches = InMemoryBatches(ImageData(images, torch.tensor([0, 2, 2, 1, 2, 0]), 3, "x"), 2)
    assert batches.class_counts(3) == (2, 1, 3) and batches.class_counts(4) == (2, 1, 3, 0)
