"""`genvision stats` and `genvision fid` end to end: one subprocess for the real CLI's exit code, in-process `main`
(`genvision` below: the same parser, the same code and error path, without a torch start-up each) for the rest."""

from __future__ import annotations

import json
import re
import subprocess
import time
import warnings

import numpy as np
import pytest
import torch

from genvision.fileio import file_sha256
from genvision.metrics.statsfile import StatsMetadata, save_stats
from genvision.weights import SHIPPED
from helpers import assert_one_line_error, cli, make_classifier, noise_images, run_genvision, write_pngs

def genvision(*args, cache) -> subprocess.CompletedProcess:
    """`genvision ARGS...` in process with GENVISION_CACHE=cache: (returncode, stdout, stderr) as a subprocess's."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setenv("GENVISION_CACHE", str(cache))
        warnings.simplefilter("ignore")  # a library's import-time warning is not genvision's output
        code, stdout, stderr = cli(*args)
    return subprocess.CompletedProcess(args, code, stdout, stderr)


FID_LINE = re.compile(r"^FID (\d+\.\d+|\d\.\d+e-\d+|0\.\d+) \(classifier features, (\d+) vs (\d+) images\)$")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, classifier_file):
    """A classifier file, a folder of 200 real digits, a folder of 200 noise images, and a private cache."""
    from genvision.data import load_dataset

    root = tmp_path_factory.mktemp("cli-fid")
    write_pngs(load_dataset("mnist5k:test").images[:200], root / "digits")
    write_pngs(noise_images(200), root / "noise")
    return {"root": root, "classifier": classifier_file, "digits": root / "digits", "noise": root / "noise",
            "cache": root / "cache"}


# ---------------------------------------------------------------------------------------------------------------
# The real CLI.


def test_stats_file_is_read_by_pytorch_fid_and_scores_zero_against_its_folder(setup):
    from pytorch_fid.fid_score import compute_statistics_of_path

    out = setup["root"] / "digits.npz"
    result = genvision("stats", setup["digits"], "--output", out, "--classifier", setup["classifier"],
                           cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 2
    assert result.stdout.startswith(f"wrote {out}: classifier statistics of 200 images from {setup['digits']}")
    assert result.stdout.splitlines()[1].startswith("protocol: classifier ")
    mu, sigma = compute_statistics_of_path(str(out), None, 1, 32, "cpu")
    assert mu.shape == (32,) and sigma.shape == (32, 32)
    with np.load(out) as archive:
        assert str(archive["extractor"]) == "classifier"
        assert str(archive["extractor_hash"]) == file_sha256(setup["classifier"])
        assert int(archive["num_samples"]) == 200
        np.testing.assert_array_equal(archive["mu"], mu)

    result = genvision("fid", setup["digits"], out, "--classifier", setup["classifier"], cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    match = FID_LINE.match(result.stdout.splitlines()[0])
    assert match, result.stdout
    assert float(match.group(1)) < 1e-6 and match.group(2) == match.group(3) == "200"


def test_fid_json_and_extra_scores(setup):
    common = ["--classifier", setup["classifier"], "--kid", "--kid-subsets", "10", "--kid-subset-size", "100",
              "--precision-recall"]
    result = genvision("fid", setup["noise"], "mnist5k:test", *common, "--json", cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"fid", "n_a", "n_b", "features", "kid", "kid_std", "precision", "recall", "density", "coverage",
            "classifier_score", "classes_covered", "class_kl"} <= set(report)
    assert (report["n_a"], report["n_b"], report["features"]) == (200, 500, "classifier")
    assert report["fid"] > 1 and report["kid"] > 0
    assert 0 <= report["precision"] <= 1 and 0 <= report["recall"] <= 1
    assert 0 <= report["density"] <= 500 / 3 and 0 <= report["coverage"] <= 1  # density is at most N / k
    assert 1 <= report["classifier_score"] <= 10 and 0 <= report["classes_covered"] <= 10

    result = genvision("fid", setup["noise"], "mnist5k:test", *common, "--classifier-scores", cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert FID_LINE.match(lines[0]) and lines[0].endswith("(classifier features, 200 vs 500 images)")
    assert lines[1].startswith("protocol: classifier ")
    assert lines[2].startswith("KID ") and lines[3].startswith("precision ")
    assert (f"recall {report['recall']:.4f}, density {report['density']:.4f}, coverage {report['coverage']:.4f} "
            f"({setup['noise']} against mnist5k:test, k=3)") in lines[3], lines[3]
    assert lines[4].startswith("classifier score (IS formula) ") and lines[5].startswith("classes covered ")
    assert float(FID_LINE.match(lines[0]).group(1)) == pytest.approx(report["fid"], rel=1e-3)


def test_manifold_scores_of_a_folder_against_itself(setup):
    """Real digits against themselves: every image is its own nearest fake (coverage 1, precision and recall 1), and
    each real ball holds its centre and its k - 1 nearer neighbours, so density is 1 (exactly, without ties)."""
    result = genvision("fid", setup["digits"], setup["digits"], "--classifier", setup["classifier"],
                       "--precision-recall", "--json", cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["precision"], report["recall"], report["coverage"]) == (1.0, 1.0, 1.0)
    assert report["density"] == pytest.approx(1.0, abs=0.01)


def test_fid_by_feature_block_in_the_output_json_and_api(setup, tmp_path):
    """An extractor with two feature blocks: each block's Fréchet distance beside the FID (a line, a JSON key, the
    API's dict), equal to `stats.block_frechet_distances` of the two sides' statistics."""
    from genvision import api
    from genvision.metrics.stats import block_frechet_distances

    make_classifier(tmp_path / "two-blocks.safetensors", multi_depth=True)
    common = ["--classifier", str(tmp_path / "two-blocks.safetensors")]
    result = genvision("fid", setup["noise"], setup["digits"], *common, "--json", cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    blocks = json.loads(result.stdout)["fid_blocks"]
    assert list(blocks) == ["semantic", "low-level"] and all(value > 0 for value in blocks.values())
    stats = [api.stats(folder, classifier=common[1]) for folder in (setup["noise"], setup["digits"])]
    expected = block_frechet_distances(stats[0]["mu"], stats[0]["sigma"], stats[1]["mu"], stats[1]["sigma"],
                                       (("semantic", 32), ("low-level", 16)))
    assert blocks == pytest.approx(expected, rel=1e-9)
    lines = genvision("fid", setup["noise"], setup["digits"], *common, cache=setup["cache"]).stdout.splitlines()
    assert lines[1] == "FID by feature block: " + ", ".join(f"{name} {value:.2f}" for name, value in blocks.items())
    assert api.fid(setup["noise"], setup["digits"], classifier=common[1])["fid_blocks"] == pytest.approx(blocks)
    single = genvision("fid", setup["noise"], setup["digits"], "--classifier", setup["classifier"], "--json",
                       cache=setup["cache"])
    assert "fid_blocks" not in json.loads(single.stdout)  # one block (0.1.0's layer alone): nothing to take apart


def test_fd_infinity_in_the_json_lines_and_api_and_refused_for_a_statistics_file(setup, tmp_path):
    """--fd-infinity: the intercept, slope and points under stable keys, equal to `stats.fd_infinity` of SOURCE_A's
    features (subsets drawn with --seed) against SOURCE_B's statistics, which may be a statistics file; its line;
    the last point (every image) is the FID. A statistics file as SOURCE_A, or too few images for two sizes, is
    refused in one line."""
    from genvision import api
    from genvision.metrics.evaluate import format_number
    from genvision.metrics.stats import FrechetReference, fd_infinity, fd_infinity_sizes

    reference = tmp_path / "digits.npz"
    stats = api.stats(setup["digits"], reference, classifier=str(setup["classifier"]))
    common = ["--classifier", setup["classifier"], "--fd-infinity", "--fd-infinity-points", "6", "--seed", "3"]
    result = genvision("fid", setup["noise"], reference, *common, "--json", cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    sizes = fd_infinity_sizes(200, 32, 6)
    assert [size for size, _ in report["fd_infinity_points"]] == sizes and sizes[0] == 64  # 2 x 32 features
    assert report["fd_infinity_points"][-1][1] == pytest.approx(report["fid"], rel=1e-9)
    expected = fd_infinity(library_features(setup["noise"], setup["classifier"]),
                           FrechetReference(stats["mu"], stats["sigma"]), sizes, seed=3)
    assert report["fd_infinity"] == pytest.approx(expected.value, rel=1e-9)
    assert report["fd_infinity_slope"] == pytest.approx(expected.slope, rel=1e-9)
    np.testing.assert_allclose(report["fd_infinity_points"], expected.points, rtol=1e-9)
    lines = genvision("fid", setup["noise"], reference, *common, cache=setup["cache"]).stdout.splitlines()
    assert (f"FD-infinity {format_number(report['fd_infinity'])} (FID at 6 sizes from 64 to 200 images "
            "extrapolated to N -> inf, Chong & Forsyth 2020)") in lines
    assert "fd_infinity" not in api.fid(setup["noise"], reference, classifier=str(setup["classifier"]))
    through_api = api.fid(setup["noise"], reference, classifier=str(setup["classifier"]), fd_infinity=True,
                          fd_infinity_points=6, seed=3)
    assert through_api["fd_infinity"] == report["fd_infinity"] and len(through_api["fd_infinity_points"]) == 6
    refused = genvision("fid", reference, setup["noise"], *common, cache=setup["cache"])
    assert_one_line_error(refused.returncode, refused.stderr, f"{reference} is a statistics file",
                          "--fd-infinity subsamples SOURCE_A")
    refused = genvision("fid", setup["noise"], reference, *common, "--fd-infinity-min-samples", "200",
                        cache=setup["cache"])
    assert_one_line_error(refused.returncode, refused.stderr, "--fd-infinity-min-samples", "below the 200 samples")
    refused = genvision("fid", setup["noise"], reference, *common, "--fd-infinity-points", "1", cache=setup["cache"])
    assert_one_line_error(refused.returncode, refused.stderr, "--fd-infinity-points must be >= 2, got 1")


def library_features(folder, classifier) -> torch.Tensor:
    """The classifier features of a folder of images, through the library (`metrics.sources`), not the CLI."""
    from genvision.metrics.extractors import load_extractor
    from genvision.metrics.sources import SourceOptions, source_statistics

    extractor = load_extractor("classifier", classifier=classifier, device="cpu")
    return source_statistics(str(folder), extractor, SourceOptions(device="cpu"), need_features=True).features


def test_precision_recall_of_a_tight_cluster_and_precision_recall_k(setup, tmp_path):
    """SOURCE_A (generated) = 4 slightly noisy copies of each of 5 real digits: every generated image is realistic
    (precision 1) but only those 5 of the 200 real digits are covered (recall 5/200 with k = 3, where each copy's
    k-th neighbour is a copy of the same digit); with k = 4 the 4th neighbour is another digit and the generated
    balls cover most real digits (recall ~0.66). Pins the argument order (A generated, B real) and that
    --precision-recall-k reaches the score, against `metrics.scores.precision_recall` on the library's features;
    density and coverage, from the same radii, are `metrics.scores.manifold_scores`'."""
    from genvision.data import load_dataset
    from genvision.metrics.scores import manifold_scores, precision_recall

    copies = load_dataset("mnist5k:test").images[:5].repeat_interleave(4, dim=0).short()
    noise = torch.randint(-3, 4, copies.shape, generator=torch.Generator().manual_seed(0))
    write_pngs((copies + noise).clamp(0, 255).to(torch.uint8), tmp_path / "cluster")
    common = ["--classifier", setup["classifier"], "--precision-recall"]
    generated = library_features(tmp_path / "cluster", setup["classifier"])
    real = library_features(setup["digits"], setup["classifier"])
    reports = {}
    for k in (3, 4):
        result = genvision("fid", tmp_path / "cluster", setup["digits"], *common, "--precision-recall-k", k, "--json",
                           cache=setup["cache"])
        assert result.returncode == 0, result.stderr
        reports[k] = json.loads(result.stdout)
        assert (reports[k]["precision"], reports[k]["recall"]) == precision_recall(real, generated, k)
        assert {key: reports[k][key] for key in ("precision", "recall", "density", "coverage")} == manifold_scores(
            real, generated, k)
    assert (reports[3]["precision"], reports[3]["recall"]) == (1.0, 5 / 200)
    assert reports[4]["precision"] == 1.0 and reports[4]["recall"] > 0.3
    default = genvision("fid", tmp_path / "cluster", setup["digits"], *common, "--json", cache=setup["cache"])
    assert json.loads(default.stdout)["recall"] == 5 / 200  # k = 3 by default
    lines = genvision("fid", tmp_path / "cluster", setup["digits"], *common, "--precision-recall-k", 4,
                      cache=setup["cache"]).stdout.splitlines()
    assert lines[2].startswith("precision 1.0000, recall 0.6") and lines[2].endswith(", k=4)"), lines


def test_dataset_resolution_decodes_dataset_specs_at_that_size(setup, tmp_path):
    """--dataset-resolution 16: mnist5k:test decoded at 16 px, then resized for the classifier as any 16 px image
    is, so its statistics (fid and stats) equal those of a folder holding the 16 px decode (FID 0); at the default
    (the classifier's 32 px) they differ."""
    from genvision.data import load_dataset

    write_pngs(load_dataset("mnist5k:test", resolution=16).images, tmp_path / "digits16")
    clf = ["--classifier", setup["classifier"]]

    def fid(*args) -> float:
        result = genvision("fid", *args, *clf, "--json", cache=setup["cache"])
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["fid"]

    assert fid("mnist5k:test", tmp_path / "digits16", "--dataset-resolution", 16) < 1e-9
    default = fid("mnist5k:test", tmp_path / "digits16")
    assert default > 0.1 and fid("mnist5k:test", tmp_path / "digits16", "--dataset-resolution", 32) == default
    out = tmp_path / "mnist16.npz"
    result = genvision("stats", "mnist5k:test", "--dataset-resolution", 16, "--output", out, *clf,
                       cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    assert fid(out, tmp_path / "digits16") < 1e-9


@pytest.mark.parametrize("args, fragments", [
    (["fid", "mnist5k:test", "mnist5k:test", "--num-samples", "0"], ["--num-samples must be > 0, got 0"]),
    (["fid", "no/such/folder", "mnist5k:test"], ["no such file or folder: no/such/folder"]),
    # A missing folder: SOURCE is named before --features auto asks for Inception weights for it.
    (["stats", "folder:no/such/folder", "--output", "x.npz"], ["folder:no/such/folder: folder no/such/folder does "
                                                               "not exist"]),
    (["fid", "mnist5k:test", "mnist5k:test", "--features", "inception"], ["--inception-weights"]),
])
def test_cli_errors_are_one_line_exit_2(setup, args, fragments):
    # the first case as a real process (its exit code and stderr), the others in process
    run = run_genvision if args[-1] == "0" else genvision
    result = run(*args, cache=setup["cache"])
    assert result.stdout == ""
    assert_one_line_error(result.returncode, result.stderr, *fragments)


# ---------------------------------------------------------------------------------------------------------------
# Every bad input, in process.


def bad_npz_files(root, classifier):
    """name -> (path, expected fragment of the error)."""
    root.mkdir(exist_ok=True)
    digest = file_sha256(classifier)
    good_meta = StatsMetadata("classifier", digest, 32, 1, "x", 100)
    files = {}
    path = root / "no-mu.npz"
    np.savez(path, sigma=np.eye(32))
    files["no-mu"] = (path, "has no 'mu' array")
    path = root / "nan.npz"
    mu = np.zeros(32)
    mu[3] = np.nan
    np.savez(path, mu=mu, sigma=np.eye(32))
    files["nan"] = (path, "mu contains NaN or inf")
    path = root / "shapes.npz"
    np.savez(path, mu=np.zeros(32), sigma=np.eye(31))
    files["shapes"] = (path, "sigma (31, 31)")
    path = root / "pickled.npz"
    np.savez(path, mu=np.array([object()] * 32, dtype=object), sigma=np.eye(32))
    files["pickled"] = (path, "'mu' holds a pickled object array")
    path = root / "other-extractor.npz"
    save_stats(path, np.zeros(32), np.eye(32), StatsMetadata("classifier", "f" * 64, 32, 1, "x", 100))
    files["other-extractor"] = (path, "was computed with extractor classifier@ffff")
    path = root / "inception.npz"
    save_stats(path, np.zeros(8), np.eye(8), StatsMetadata("inception-v3-compat", "e" * 64, 299, 3, "x", 100))
    files["inception"] = (path, "was computed with extractor inception-v3-compat@eeee")
    path = root / "classifier-0.1.0.npz"  # 0.1.0's shipped classifier: 128 features, its file's hash
    save_stats(path, np.zeros(128), np.eye(128), StatsMetadata("classifier", "b388b2ae" + "0" * 56, 32, 1, "x", 100))
    files["classifier-0.1.0"] = (path, "was computed with extractor classifier@b388b2ae0000")
    path = root / "pytorch-fid.npz"
    np.savez(path, mu=np.zeros(32), sigma=np.eye(32))
    files["no-metadata"] = (path, "has no extractor metadata")
    path = root / "one-sample.npz"
    save_stats(path, np.zeros(32), np.eye(32), StatsMetadata("classifier", digest, 32, 1, "x", 1))
    files["one-sample"] = (path, "gives 1 image")
    path = root / "not-a-zip.npz"
    path.write_bytes(b"hello")
    files["not-a-zip"] = (path, "is not a valid .npz archive")
    assert good_meta.same_feature_space(StatsMetadata("classifier", digest, 32, 1))
    return files


BAD_NPZ = ["no-mu", "nan", "shapes", "pickled", "other-extractor", "inception", "classifier-0.1.0", "no-metadata",
           "one-sample", "not-a-zip"]


@pytest.mark.parametrize("name", BAD_NPZ)
def test_bad_stats_files(setup, name):
    path, fragment = bad_npz_files(setup["root"] / "bad", setup["classifier"])[name]
    rc, stdout, stderr = cli("fid", setup["digits"], path, "--classifier", setup["classifier"])
    assert stdout == ""
    assert_one_line_error(rc, stderr, str(path), fragment)


def test_bad_inputs(setup, tmp_path):
    from safetensors.torch import save_file

    empty = tmp_path / "empty"
    empty.mkdir()
    one = tmp_path / "one"
    write_pngs(noise_images(1), one)
    broken = tmp_path / "broken"
    write_pngs(noise_images(3), broken)
    (broken / "0001.png").write_bytes(b"not a png")
    not_classifier = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(not_classifier))
    clf = ["--classifier", str(setup["classifier"])]
    digits = str(setup["digits"])
    cases = [
        (["fid", digits, "mnist5k:test", "--num-samples", "0", *clf], "--num-samples must be > 0"),
        (["fid", digits, "mnist5k:test", "--batch-size", "-1", *clf], "--batch-size must be > 0"),
        (["fid", digits, "mnist5k:test", "--num-samples", "many"], "invalid int value: 'many'"),
        (["fid", digits, "mnist5k:test", "--classifier", str(not_classifier)], "is not a genvision classifier"),
        (["fid", digits, "mnist5k:test", "--classifier", str(tmp_path / "nope.safetensors")], "does not exist"),
        (["fid", "nowhere/images", "mnist5k:test", *clf], "no such file or folder: nowhere/images"),
        (["fid", digits, "missing.npz", *clf], "no such file or folder: missing.npz"),
        (["fid", digits, "imagenet", *clf], "is not a file, a folder or a dataset spec"),
        (["fid", str(empty), digits, *clf], "holds no images"),
        (["fid", str(one), digits, *clf], "gives 1 image; FID statistics need at least 2"),
        (["fid", str(broken), digits, *clf], "cannot read image"),
        (["fid", str(setup["root"] / "digits" / "0000.png"), digits, *clf], "single image"),
        (["fid", digits, "mnist5k:test", "--features", "inception"], "--inception-weights"),
        (["fid", digits, "mnist5k:test", "--device", "toaster", *clf], "--device must be"),
        (["stats", digits, *clf], "--output must be a file path ending in .npz"),
        (["stats", digits, "--output", str(tmp_path / "stats.txt"), *clf], "ending in .npz"),
        (["stats", digits, "--output", str(tmp_path / "missing-folder" / "s.npz"), *clf], "does not exist"),
        (["stats", digits, "--output", str(tmp_path / "s.npz"), "--num-samples", "0", *clf], "--num-samples"),
    ]
    for argv, fragment in cases:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        rc, stdout, stderr = cli(*argv)
        assert stdout == "", argv
        assert_one_line_error(rc, stderr, fragment)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, f"{argv} wrote files"


def test_few_samples_warn_but_score(setup, tmp_path):
    write_pngs(noise_images(10, seed=5), tmp_path / "ten")
    rc, stdout, stderr = cli("fid", tmp_path / "ten", setup["digits"], "--classifier", setup["classifier"])
    assert rc == 0
    assert FID_LINE.match(stdout.splitlines()[0])
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "fewer than the 32 feature dimensions" in warnings[0]


def test_protocol_line_for_classifier_features(setup):
    """`fid` prints the protocol for classifier features as for Inception: extractor id and hash, the resize rule,
    and per side its N, image side and channel handling; --json carries the same notes."""
    clf = ["--classifier", setup["classifier"]]
    digest = file_sha256(setup["classifier"])
    result = genvision("fid", setup["digits"], "mnist5k:test", *clf, cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == (
        f"protocol: classifier {digest[:12]}; pad28+bicubic-antialias to 32 px; "
        f"{setup['digits']}: N=200, 32 px, as is; mnist5k:test: N=500, 32 px, as is")
    report = json.loads(genvision("fid", setup["digits"], "mnist5k:test", *clf, "--json", cache=setup["cache"]).stdout)
    assert report["protocol"] == {
        "extractor": "classifier", "extractor_hash": digest, "resize": "pad28+bicubic-antialias to 32 px",
        "sides": [{"source": str(setup["digits"]), "num_samples": 200, "size": 32, "channels": "as is"},
                  {"source": "mnist5k:test", "num_samples": 500, "size": 32, "channels": "as is"}]}


@pytest.mark.parametrize("old_resize", ["bicubic-antialias", None], ids=["recorded", "not-recorded"])
def test_statistics_of_the_earlier_28px_rule_are_refused(setup, tmp_path, old_resize):
    """Statistics made when a folder's 28-px images were resized (not padded) record ``bicubic-antialias`` (or,
    older still, no resize field): `fid` refuses them in one line naming what they record and what it expects."""
    from genvision.metrics.statsfile import load_stats

    digest = file_sha256(setup["classifier"])
    path = tmp_path / "old.npz"
    save_stats(path, np.zeros(32), np.eye(32), StatsMetadata("classifier", digest, 32, 1, "x", 100,
                                                             resize=old_resize or "bicubic-antialias"))
    if old_resize is None:
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files if key != "resize"}
        np.savez(path, **arrays)
    assert load_stats(path)[2].resize == "bicubic-antialias"
    rc, stdout, stderr = cli("fid", setup["digits"], path, "--classifier", setup["classifier"])
    assert stdout == ""
    assert_one_line_error(rc, stderr, str(path), f"classifier@{digest} (32 px, 1 ch, bicubic-antialias resize)",
                          f"classifier@{digest} (32 px, 1 ch, pad28+bicubic-antialias resize)", "recompute",
                          command="fid")


def test_classifier_score_ignores_class_sorted_order():
    from genvision.metrics.scores import shuffled_classifier_score
    from genvision.metrics.scores import classifier_score

    logits = 20 * torch.eye(10).repeat_interleave(50, dim=0)  # 500 confident predictions, sorted by class
    assert classifier_score(logits)[0] == pytest.approx(1.0, abs=1e-3)  # each contiguous split holds one class
    score, std = shuffled_classifier_score(logits)
    assert score > 8 and std < 1
    assert shuffled_classifier_score(logits.flip(0))[0] == pytest.approx(score, abs=0.5)  # order barely matters


# ---------------------------------------------------------------------------------------------------------------
# InceptionV3 offline, on random weights (the inception_weights fixture).


def test_inception_offline_on_a_weights_file(setup, tmp_path, inception_weights):
    write_pngs(noise_images(3, seed=1), tmp_path / "a")
    write_pngs(noise_images(3, seed=2, channels=3, size=40), tmp_path / "b")

    out = tmp_path / "a.npz"
    rc, stdout, _ = cli("stats", tmp_path / "a", "--output", out, "--features", "inception", "--inception-weights",
                        inception_weights)
    assert rc == 0
    assert "inception-v3-compat" in stdout
    with np.load(out) as archive:
        assert archive["mu"].shape == (2048,) and int(archive["image_size"]) == 299
    result = genvision("fid", tmp_path / "b", out, "--features", "inception", "--inception-weights",
                           inception_weights, "--json", cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["features"] == "inception" and report["extractor"] == "inception-v3-compat"
    assert np.isfinite(report["fid"]) and (report["n_a"], report["n_b"]) == (3, 3)
    assert "classifier_score" not in report
    assert "fewer than the 2048 feature dimensions" in result.stderr
    assert "resized to" not in result.stderr  # 40 px and 32 px images enter the network, which resizes them itself
    assert report["protocol"]["resize"] == "pad28+tf1-bilinear to 299 px inside the network (torch-fidelity)"
    assert [(side["size"], side["channels"]) for side in report["protocol"]["sides"]] == [
        (40, "as is"), (32, "1-channel repeated to 3")]


# ---------------------------------------------------------------------------------------------------------------
# Real data with the shipped classifier.


@pytest.mark.slow
def test_shipped_classifier_real_vs_real_and_vs_noise(tmp_path):
    if not SHIPPED["mnist5k"].is_file():
        pytest.skip("the shipped classifier genvision/weights/classifier-mnist5k.safetensors is not built yet")
    write_pngs(noise_images(500, seed=7), tmp_path / "noise")
    cache = tmp_path / "cache"
    started = time.perf_counter()
    real = genvision("fid", "mnist5k:train", "mnist5k:test", "--json", cache=cache)
    real_seconds = time.perf_counter() - started
    started = time.perf_counter()
    noise = genvision("fid", "mnist5k:train", tmp_path / "noise", "--json", cache=cache)
    noise_seconds = time.perf_counter() - started
    assert real.returncode == 0 and noise.returncode == 0, real.stderr + noise.stderr
    real_report, noise_report = json.loads(real.stdout), json.loads(noise.stdout)
    real_fid, noise_fid = real_report["fid"], noise_report["fid"]
    assert real_report["classes_covered"] == 10 and real_report["classifier_score"] > 3
    print(f"\nshipped classifier: FID mnist5k:train vs test {real_fid:.3f} ({real_seconds:.1f} s), "
          f"vs 500 noise PNGs {noise_fid:.3f} ({noise_seconds:.1f} s, reference statistics cached)")
    assert real_seconds < 60 and noise_seconds < 60
    assert noise_fid > 20 * real_fid and noise_fid > 10 * max(real_fid, 1.0)


@pytest.mark.slow
def test_28px_pngs_of_real_digits_score_as_their_dataset_spec(tmp_path):
    """The digits of mnist5k:test saved as 28-px grayscale PNGs (as torchvision and most MNIST generators save
    them) score against mnist5k:train as the dataset spec of the same digits does: both reach the extractor padded
    to 32 px (under the earlier rule the folder was resized instead: FID ~74 against the spec's ~4)."""
    if not SHIPPED["mnist5k"].is_file():
        pytest.skip("the shipped classifier genvision/weights/classifier-mnist5k.safetensors is not built yet")
    from genvision.data import read_mnist5k

    digits, _ = read_mnist5k("test")  # (500, 28, 28) uint8: the raw digits of mnist5k:test
    write_pngs(torch.from_numpy(digits)[:, None], tmp_path / "digits28")
    cache = tmp_path / "cache"
    folder = genvision("fid", tmp_path / "digits28", "mnist5k:train", "--json", cache=cache)
    spec = genvision("fid", "mnist5k:test", "mnist5k:train", "--json", cache=cache)
    assert folder.returncode == 0 and spec.returncode == 0, folder.stderr + spec.stderr
    folder_report, spec_report = json.loads(folder.stdout), json.loads(spec.stdout)
    assert folder_report["n_a"] == spec_report["n_a"] == 500
    assert folder_report["fid"] == pytest.approx(spec_report["fid"], rel=0.1)
    assert "padded with 2 px of black to 32x32 px" in folder.stderr
    assert folder_report["protocol"]["resize"] == "pad28+bicubic-antialias to 32 px"
    assert [side["size"] for side in folder_report["protocol"]["sides"]] == [28, 32]


# ---------------------------------------------------------------------------------------------------------------
# A class-conditional generator as SOURCE_A: class accuracy and intra-class FID.



def stand_in_conditional(root, num_classes: int = 10):
    """(checkpoint folder, LoadedGenerator): a committed GAN checkpoint whose checkpoint.json names `num_classes`
    classes (c0, c1, ...; 3 training images each), and the loaded generator `sampling.load_generator` is made to
    return for it: a fixed function of (z, labels) whose class sets the image's brightness."""
    from genvision.checkpoint import Checkpoint, save_checkpoint
    from genvision.generators import LoadedGenerator

    weight = torch.linspace(-1, 1, 4 * 32 * 32).reshape(4, 32 * 32)

    def decode(latents, labels):
        shift = (labels.float() / num_classes - 0.4)[:, None, None, None]
        return torch.tanh(latents @ weight).reshape(-1, 1, 32, 32) * 0.5 + shift

    names, counts = [f"c{index}" for index in range(num_classes)], [3] * num_classes
    meta = {"kind": "gan", "step": 1, "config": {"latent_dim": 4, "base_channels": 8, "channels": 1,
                                                  "resolution": 32, "dataset": "mnist5k:train"},
            "class_names": names, "class_counts": counts}
    folder = save_checkpoint(root / "run" / "checkpoints" / "step-000001", meta, {"generator": {"w": torch.zeros(1)}},
                             {})
    return folder, LoadedGenerator(decode, 4, 32, 1, Checkpoint(folder, meta), False, class_names=tuple(names),
                                   class_counts=tuple(counts))


@pytest.fixture
def conditional(setup, tmp_path, monkeypatch):
    """A stand-in conditional generator (`stand_in_conditional`) and a reference folder of its own images, one
    subfolder per class (c0 .. c9, 4 images each, another seed)."""
    from genvision import sampling

    folder, loaded = stand_in_conditional(tmp_path)
    monkeypatch.setattr(sampling, "load_generator", lambda *args, **kwargs: loaded)
    for label in range(10):
        write_pngs(sampling.generate(loaded, 4, 9, labels=[label] * 4), tmp_path / "reference" / f"c{label}")
    return folder, loaded, tmp_path / "reference"


def test_conditional_generator_gets_class_accuracy_and_intra_class_fid(setup, conditional):
    """`fid CKPT FOLDER --json` of a conditional generator: class_accuracy and fid_intra_class (classes matched by
    subfolder name) equal `metrics.conditional` of the features, logits and labels the sources give, the labels
    being the training frequencies' (`sampling.class_labels`); the human-readable lines say them; the API returns
    the same."""
    from genvision import api
    from genvision.metrics import conditional as metrics
    from genvision.metrics.extractors import ClassifierExtractor
    from genvision.metrics.sources import SourceOptions, source_statistics
    from genvision.sampling import class_labels

    checkpoint, loaded, reference = conditional
    flags = ["--classifier", str(setup["classifier"]), "--num-samples", "40", "--seed", "3", "--batch-size", "16"]
    result = genvision("fid", str(checkpoint), str(reference), *flags, "--json", cache=setup["cache"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    extractor = ClassifierExtractor.from_file(setup["classifier"])
    options = SourceOptions(batch_size=16, num_samples=40, seed=3)
    side_a = source_statistics(str(checkpoint), extractor, options, need_features=True, need_logits=True,
                               need_labels=True)
    side_b = source_statistics(str(reference), extractor, options, need_features=True, need_labels=True)
    assert torch.equal(side_a.labels, class_labels(40, [3] * 10, 3)) and side_a.class_names == loaded.class_names
    assert report["class_accuracy"] == metrics.class_accuracy(side_a.logits, side_a.labels)
    distances, mean = metrics.intra_class_fid(side_a.features, side_a.labels, side_b.features, side_b.labels,
                                              loaded.class_names)
    assert report["fid_intra_class"] == pytest.approx(distances, rel=1e-12)
    assert report["fid_intra_class_mean"] == pytest.approx(mean, rel=1e-12)
    assert list(report["fid_intra_class"]) == [f"c{index}" for index in range(10)]
    lines = genvision("fid", str(checkpoint), str(reference), *flags, cache=setup["cache"]).stdout
    assert f"class accuracy {report['class_accuracy']:.4f} (share of {checkpoint}'s samples" in lines
    assert "intra-class FID " in lines and "mean over 10 classes" in lines
    returned = api.fid(checkpoint, reference, classifier=str(setup["classifier"]), num_samples=40, seed=3,
                       batch_size=16)
    keys = ("fid", "class_accuracy", "fid_intra_class", "fid_intra_class_mean")
    assert {key: returned[key] for key in keys} == {key: report[key] for key in keys}


def test_conditional_metrics_are_skipped_with_a_note_when_they_do_not_apply(setup, conditional):
    """Against an unlabelled folder: class accuracy only, and a note for the intra-class FID; an unconditional
    SOURCE_A: no conditional key, no note."""
    checkpoint, _, _ = conditional
    flags = ["--classifier", str(setup["classifier"]), "--num-samples", "40", "--batch-size", "16", "--json"]
    result = genvision("fid", str(checkpoint), str(setup["digits"]), *flags, cache=setup["cache"])
    report = json.loads(result.stdout)
    assert "class_accuracy" in report and "fid_intra_class" not in report
    assert "intra-class FID not computed" in result.stderr and "has no class labels" in result.stderr
    plain = genvision("fid", str(setup["digits"]), str(setup["noise"]), *flags, cache=setup["cache"])
    assert not {"class_accuracy", "fid_intra_class"} & set(json.loads(plain.stdout)) and "note:" not in plain.stderr


def test_class_accuracy_under_inception_features_needs_classifier(setup, conditional, inception_weights, tmp_path):
    """With Inception features --classifier FILE grades the samples in a second pass over the same samples (the
    classifier-features run's class accuracy), and is not said to be ignored. (Against an unlabelled folder: each
    intra-class FID of 2048 Inception features costs two 2048 x 2048 eigendecompositions, a minute for 10 classes on
    2 CPU cores.)"""
    checkpoint, _, _ = conditional
    write_pngs(noise_images(20), tmp_path / "small")
    flags = ["--num-samples", "20", "--batch-size", "20", "--classifier", str(setup["classifier"]), "--json"]
    graded = genvision("fid", str(checkpoint), str(tmp_path / "small"), "--features", "inception",
                       "--inception-weights", str(inception_weights), *flags, cache=setup["cache"])
    assert graded.returncode == 0, graded.stderr
    assert "ignored" not in graded.stderr
    report = json.loads(graded.stdout)
    by_classifier = json.loads(genvision("fid", str(checkpoint), str(tmp_path / "small"), *flags,
                                         cache=setup["cache"]).stdout)
    assert report["extractor"] == "inception-v3-compat"
    assert report["class_accuracy"] == by_classifier["class_accuracy"]
