"""`genvision report` and the report written at the end of every run (`training.finish`).

A 2-step tiny GAN run with FID on (100 samples) writes its report itself; a tiny VAE run (FID off) gets one from
`genvision report --num-samples 100`. Checks: self-contained page (every image a PNG data URI), the numbers of
metrics.jsonl, summary.json and config.json on the page, the final table's FID equal to the FID the run logged (same
latents), the bootstrap maths, a report failure that costs only a warning line, bad input, and (when Debian's
`chromium` is installed) a headless screenshot that is not blank: skipped without it, a failure when
GENVISION_REQUIRE_CHROMIUM=1 (set by .ci/run, which installs it).
"""

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genvision.errors import UsageError
from helpers import assert_one_line_error, cli, finish, metrics_records, subprocess_env, tiny_flags

TINY = ["--num-steps", "2", "--sample-every", "1", "--log-every", "1"]  # and tiny_flags(latent_dim=8), FID on or off
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
REQUIRE_CHROMIUM = os.environ.get("GENVISION_REQUIRE_CHROMIUM") == "1"  # CI: a missing chromium fails, not skips
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, start_process) -> dict[str, tuple[Path, str]]:
    """{"gan": (run folder, stdout), "vae": (run folder, stdout)}, trained at the same time."""
    base = tmp_path_factory.mktemp("report-runs")
    extra = {"gan": [*tiny_flags(latent_dim=8, fid_every=1), "--num-fid-samples", "100"],
             "vae": tiny_flags(latent_dim=8)}
    env = subprocess_env(PYTHONWARNINGS="ignore")
    started = {kind: start_process([f"train_{kind}.py", "--out-dir", str(base / kind), *TINY, *extra[kind]], env=env)
               for kind in extra}
    return {kind: (base / kind, finish(process, kind, forbidden=("Traceback", "warning")))
            for kind, process in started.items()}


@pytest.fixture(scope="module")
def vae_report(runs) -> tuple[Path, str]:
    """(report path, stdout) of `genvision report VAE_RUN --num-samples 100`."""
    run, _ = runs["vae"]
    code, stdout, stderr = cli("report", run, "--num-samples", 100, "--bootstrap", 50)
    assert code == 0, stderr
    return run / "report.html", stdout


def data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_finished_run_writes_its_report_before_the_closing_line(runs):
    run, stdout = runs["gan"]
    lines = stdout.strip().splitlines()
    assert lines[-2] == f"report {run / 'report.html'}" and lines[-1].startswith(f"run folder {run}")
    assert not list(run.glob("*.tmp")) and not list(run.glob(".report.html*"))
    summary = json.loads((run / "summary.json").read_text())
    assert 0 < summary["wall_time_s"] < 300


def test_page_is_self_contained(runs):
    page = (runs["gan"][0] / "report.html").read_text()
    images = data_uris(page)
    assert len(images) >= 4 and all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources), sources
    assert "<script" not in page and "<link" not in page and "url(" not in page and "@import" not in page


def test_page_shows_metrics_jsonl_summary_and_config(runs):
    run, _ = runs["gan"]
    page = (run / "report.html").read_text()
    logged = metrics_records(run)
    fids = [r for r in logged if "fid" in r]
    assert [r["step"] for r in fids] == [1, 2]
    for record in fids:  # with each feature block's logged distance beside the FID
        assert (f"<td class=num>{record['step']}</td><td class=num>{record['fid']}</td>"
                f"<td class=num>{record['fid_semantic']}</td><td class=num>{record['fid_low_level']}</td>") in page
    assert "<th>step</th><th>FID</th><th>semantic</th><th>low-level</th>" in page
    last = [r for r in logged if "fid" not in r][-1]
    assert f"Last logged step ({last['step']})" in page
    for key in ("d_loss", "g_loss", "img_per_s"):
        assert f"<td>{key}</td><td class=num>{last[key]}</td>" in page
    config = json.loads((run / "config.json").read_text())["config"]
    for key, value in config.items():
        assert f"<td>{key}</td><td>{html.escape(json.dumps(value))}</td>" in page, key
    best = min(fids, key=lambda r: r["fid"])["step"]  # the first of equal FIDs, as the run keeps it
    for words in ("wall time", "training throughput", "best FID (logged)", "KID", "precision", "recall",
                  "<td>density</td>", "<td>coverage</td>", "classes covered", "class KL", "bootstrap 95% interval",
                  f"best checkpoint best-step-{best:06d}",
                  "memorization (copy rate)", "held-out mnist5k:test images", "memorization check: the 8 samples"):
        assert words in page, words


def test_final_fid_equals_the_fid_the_run_logged(runs):
    """Same checkpoint, seed and sample count as the training FID: the same images, so the same FID."""
    run, _ = runs["gan"]
    page = (run / "report.html").read_text()
    best = min((r for r in metrics_records(run) if "fid" in r), key=lambda r: r["fid"])  # the best checkpoint's
    assert "100 samples (seed 0) of " + str(run / "checkpoints" / f"best-step-{best['step']:06d}") in page
    fid = float(re.search(r"<td>FID</td><td>([0-9.]+)</td>", page).group(1))
    low, high = map(float, re.search(r"bootstrap 95% interval \[([0-9.]+), ([0-9.]+)\]", page).groups())
    logged = best["fid"]
    assert fid == pytest.approx(logged, rel=1e-5, abs=1e-4)
    assert low <= high and math_close_or_inside(fid, low, high)


def math_close_or_inside(value: float, low: float, high: float) -> bool:
    """The bootstrap interval of a biased statistic may sit just above it; allow a small margin."""
    margin = 0.05 * max(abs(value), 1e-9)
    return low - margin <= value <= high + margin


def metrics_table(page: str) -> dict[str, str]:
    """metric name -> its value cell (unescaped) of the page's final metrics table."""
    table = page[page.index("<th>metric</th>"):]
    table = table[:table.index("</table>")]
    return {html.unescape(name): html.unescape(value)
            for name, value in re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>", table)}


def assert_printed(text: str, value: float) -> None:
    """`text` (a table cell: 0.1234 or 1.234e-04) is `value` to its printed precision (half a unit in its last
    digit; at least 1e-6 relative, for float noise between two computations of the same number)."""
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    half_unit = 0.5 * 10.0 ** (int(exponent or 0) - decimals)
    assert abs(float(text) - value) <= max(1.0001 * half_unit, 1e-6 * abs(value)), (text, value)


def test_final_table_is_genvision_fid_of_the_same_samples(runs):
    """The report's FID, KID, precision, recall, density, coverage, classifier score, classes covered and class KL
    are `genvision fid` of the same checkpoint, sample count and seed against the run's --dataset, to the printed
    precision."""
    run, _ = runs["gan"]
    table = metrics_table((run / "report.html").read_text())
    checkpoint = re.search(r"100 samples \(seed 0\) of (\S+) ", (run / "report.html").read_text()).group(1)
    code, stdout, stderr = cli("fid", checkpoint, "mnist5k:train", "--num-samples", 100, "--seed", 0, "--kid",
                               "--kid-subsets", 10, "--kid-subset-size", 1000, "--precision-recall", "--memorization",
                               "--json")
    assert code == 0, stderr
    expected = json.loads(stdout)
    assert_printed(table["FID"], expected["fid"])
    for name, value in expected["fid_blocks"].items():  # each feature block's own distance, as `fid` gives it
        assert_printed(table[f"FID, {name} block"], value)
    headline = re.search(r"<p class=headline>(.*?)</p>", (run / "report.html").read_text()).group(1)
    assert headline.startswith(f"FID {table['FID']} (semantic {table['FID, semantic block']}, low-level ")
    assert f"precision {table['precision']} (fidelity" in headline and f"recall {table['recall']} (diversity" in headline
    for cell, value in zip(table["KID"].split(" ± "), (expected["kid"], expected["kid_std"]), strict=True):
        assert_printed(cell, value)
    assert_printed(table["precision"], expected["precision"])
    assert_printed(table["recall"], expected["recall"])
    assert_printed(table["density"], expected["density"])
    assert_printed(table["coverage"], expected["coverage"])
    assert f"density {table['density']} · coverage {table['coverage']}" in headline
    for cell, value in zip(table["classifier score"].split(" ± "),
                           (expected["classifier_score"], expected["classifier_score_std"]), strict=True):
        assert_printed(cell, value)
    assert table["classes covered"] == f"{expected['classes_covered']} / 10"
    assert_printed(table["class KL"], expected["class_kl"])
    # the memorization check against the run's --dataset, calibrated on its test split, as `fid --memorization`
    assert table["memorization (copy rate)"] == f"{100 * expected['copy_rate']:.2f}%"
    assert expected["memorization_held_out"] == "mnist5k:test"
    caption = html.unescape(re.search(r"<figcaption>(memorization check: .*?)</figcaption>",
                                      (run / "report.html").read_text()).group(1))
    assert f"copy threshold {expected['copy_threshold']:.4g}. " in caption
    listed = "; ".join(f"sample {pair['generated']} ~ training image {pair['training']} (distance "
                       f"{pair['distance']:.4g})" for pair in expected["closest_pairs"])
    assert caption.endswith(listed)


def test_memorization_figure_shows_each_sample_beside_its_nearest_training_image(runs):
    """The closest-pairs grid, one pair a row: the left image is that sample of the best checkpoint (seed 0, as the
    table's), the right one that image of mnist5k:train, in the order of the caption."""
    from PIL import Image

    from genvision.data import load_dataset
    from genvision.sampling import generate, load_generator

    run, _ = runs["gan"]
    page = (run / "report.html").read_text()
    figure = re.search(r'alt="memorization check: [^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">'
                       r"<figcaption>([^<]*)</figcaption>", page)
    with Image.open(io.BytesIO(base64.b64decode(figure.group(1)))) as image:
        grid = torch.from_numpy(np.asarray(image.convert("L")).copy())
    pairs = [tuple(map(int, found)) for found in re.findall(r"sample (\d+) ~ training image (\d+)",
                                                             html.unescape(figure.group(2)))]
    assert len(pairs) == 8 and grid.shape == (8 * 34 + 2, 2 * 34 + 2)
    checkpoint = re.search(r"100 samples \(seed 0\) of (\S+) ", page).group(1)
    samples = generate(load_generator(checkpoint), 100, 0)
    training = load_dataset("mnist5k:train").images
    for row, (sample, nearest) in enumerate(pairs):
        top = 2 + 34 * row
        assert torch.equal(grid[top:top + 32, 2:34], samples[sample, 0])
        assert torch.equal(grid[top:top + 32, 36:68], training[nearest, 0])


def test_memorization_row_without_a_held_out_split_and_when_switched_off():
    """A folder dataset is its own held-out split: the row says so, and nothing is read; a table without the check
    (--memorization-pairs 0) has no row."""
    from genvision.report import FinalMetrics, memorization_sets, metrics_html

    note = memorization_sets({"dataset": "folder:no/such/images"}, "folder:no/such/images", None, None, None)
    assert note.startswith("not computed: no held-out split")
    values = {"fid": 1.0, "kid": (0.0, 0.0), "precision": 1.0, "recall": 1.0, "density": 1.0,
              "coverage": 1.0}
    table = metrics_table(metrics_html(FinalMetrics(values={**values, "memorization_note": note})))
    assert table["memorization (copy rate)"] == "–"
    assert "memorization" not in metrics_html(FinalMetrics(values=values))


def test_fd_infinity_of_the_report_is_genvision_fids(runs):
    """FD-infinity in the report: the run's 100 samples are too few for two sizes above 2 x its 64 feature
    dimensions, so its row says why and the report goes on; with 300 samples (`final_metrics`, the table's numbers)
    it is `genvision fid --fd-infinity` of the same checkpoint, sample count and seed, to rounding."""
    from genvision.config import ReportConfig
    from genvision.report import final_metrics, read_run

    run, _ = runs["gan"]
    page = (run / "report.html").read_text()
    assert metrics_table(page)["FD-infinity"] == "–"
    assert ("not computed: FD-infinity needs at least 2 sample sizes from N_min = max(N // 10, 2 x 64 features) = "
            "128 to the 100 samples; give more than 128 samples") in page
    options = ReportConfig(run_dir=str(run), num_samples=300, bootstrap=0, kid_subsets=2, kid_subset_size=50,
                           fd_infinity_points=5)
    values = final_metrics(read_run(run), options, torch.device("cpu")).values
    checkpoint = re.search(r"100 samples \(seed 0\) of (\S+) ", page).group(1)
    code, stdout, stderr = cli("fid", checkpoint, "mnist5k:train", "--num-samples", 300, "--seed", 0, "--fd-infinity",
                               "--fd-infinity-points", 5, "--json")
    assert code == 0, stderr
    expected = json.loads(stdout)
    assert values["fid"] == pytest.approx(expected["fid"], rel=1e-9)
    assert values["fd_infinity"] == pytest.approx(expected["fd_infinity"], rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(values["fd_infinity_points"], expected["fd_infinity_points"], rtol=1e-9)
    assert [size for size, _ in values["fd_infinity_points"]] == [128, 171, 214, 257, 300]


def test_table_cells_hold_their_own_scores():
    """sample_scores and metrics_html on features where every score differs: generated = a tight cluster inside the
    real features (precision ~1, recall ~0), logits favouring 3 of 4 classes. Each cell is `metrics.scores` of the
    right inputs, in the right order, under its own name."""
    from genvision.config import ReportConfig
    from genvision.metrics import scores
    from genvision.report import FinalMetrics, metrics_html, sample_scores

    generator = torch.Generator().manual_seed(0)
    real_features = torch.randn(300, 6, generator=generator, dtype=torch.float64)
    fake_features = 0.15 * torch.randn(80, 6, generator=generator, dtype=torch.float64)
    real_logits = torch.randn(300, 4, generator=generator) * 3
    fake_logits = torch.randn(80, 4, generator=generator) * 3 + torch.tensor([2.0, 1.0, 0.0, -9.0])
    real = SimpleNamespace(features=real_features, logits=real_logits)
    generated = SimpleNamespace(features=fake_features, logits=fake_logits)
    options = ReportConfig(kid_subsets=7, kid_subset_size=50)
    values = sample_scores(generated, real, 4, options)
    table = metrics_table(metrics_html(FinalMetrics(values={"fid": 12.5, **values}, num_samples=80)))
    precision, recall = scores.precision_recall(real_features, fake_features, 3)
    assert precision > 0.9 and recall < 0.2  # different enough that a swap shows
    assert_printed(table["precision"], precision)
    assert_printed(table["recall"], recall)
    manifold = scores.manifold_scores(real_features, fake_features, 3)
    assert manifold["density"] > 1 and manifold["coverage"] < 0.2  # not each other's, nor precision's or recall's
    assert_printed(table["density"], manifold["density"])
    assert_printed(table["coverage"], manifold["coverage"])
    kid = scores.kernel_inception_distance(fake_features, real_features, 7, 50)
    for cell, value in zip(table["KID"].split(" ± "), kid, strict=True):
        assert_printed(cell, value)
    assert kid[0] > 3 * kid[1] > 0  # mean and std apart: a swap shows
    score = scores.shuffled_classifier_score(fake_logits)  # the report's score is `genvision fid`'s
    for cell, value in zip(table["classifier score"].split(" ± "), score, strict=True):
        assert_printed(cell, value)
    coverage = scores.class_coverage(fake_logits, real_logits, 4)
    assert coverage["classes_covered"] == 3 and table["classes covered"] == "3 / 4"
    assert_printed(table["class KL"], coverage["class_kl"])
    assert table["FID"] == "12.5000"


def test_fd_infinity_row_shows_the_fit_or_why_it_was_not_computed():
    """The FD-infinity row: its value and the fit's sizes, or, with too few samples for two sizes, a dash and the
    reason; none when it was turned off (--fd-infinity-points 0)."""
    from genvision.config import ReportConfig
    from genvision.report import FinalMetrics, metrics_html

    common = {"fid": 12.5, "kid": (0.1, 0.01), "precision": 0.5, "recall": 0.5, "density": 0.5, "coverage": 0.5}
    fitted = {"fd_infinity": 11.25, "fd_infinity_slope": 1250.0, "fd_infinity_points": ((500, 14.0), (5000, 11.5))}
    page = metrics_html(FinalMetrics(values={**common, **fitted}, num_samples=5000))
    assert metrics_table(page)["FD-infinity"] == "11.2500"
    assert "FID at 2 sizes from 500 to 5000 generated samples, extrapolated to N -&gt; infinity" in page
    note = "not computed: FD-infinity needs at least 2 sample sizes"
    page = metrics_html(FinalMetrics(values={**common, "fd_infinity_note": note}, num_samples=50))
    assert metrics_table(page)["FD-infinity"] == "–" and note in page
    assert "FD-infinity" not in metrics_table(metrics_html(FinalMetrics(values=common, num_samples=50)))
    with pytest.raises(UsageError, match=r"--fd-infinity-points must be >= 2 \(or 0 = off\), got 1"):
        ReportConfig(fd_infinity_points=1).validate()


def class_table(page: str) -> dict[str, tuple[str, str]]:
    """class -> (intra-class FID cell, class accuracy cell) of a conditional run's per-class table."""
    table = page[page.index("<th>intra-class FID</th>"):]
    table = table[:table.index("</table>")]
    return {html.unescape(name): (html.unescape(fid), html.unescape(accuracy))
            for name, fid, accuracy in re.findall(r"<tr><td>([^<]*)</td><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>",
                                                   table)}


def test_conditional_run_gets_class_accuracy_and_a_row_per_class():
    """class_values and metrics_html on hand-made features and logits of 3 classes (names b, a, c: the generator's
    order, matched by name to a reference folder's sorted subfolders): the table's class accuracy and each class's
    row (intra-class FID, accuracy of its samples) are `metrics.conditional` of the right rows; the mean row too."""
    from genvision.metrics import conditional
    from genvision.report import FinalMetrics, class_values, metrics_html

    generator = torch.Generator().manual_seed(0)
    requested = torch.tensor([0, 1, 2] * 20)
    fake = torch.randn(60, 3, generator=generator, dtype=torch.float64) + requested[:, None].double()
    logits = torch.nn.functional.one_hot((requested + (torch.arange(60) % 5 == 0)) % 3, 3).float()  # 1 in 5 wrong
    logits[requested == 2] = torch.tensor([0.0, 0.0, 1.0])  # class c: every sample right
    reference_labels = torch.tensor([0, 1, 2] * 30)  # subfolders a, b, c
    real_features = torch.randn(90, 3, generator=generator, dtype=torch.float64) + 2 * reference_labels[:, None]
    real = SimpleNamespace(features=real_features, labels=reference_labels, class_names=("a", "b", "c"))
    generated = SimpleNamespace(features=fake, logits=logits)
    values = class_values(generated, real, requested, ("b", "a", "c"), 3)
    distances, mean = conditional.intra_class_fid(fake, requested, real_features, reference_labels, ["b", "a", "c"],
                                                  [1, 0, 2])
    accuracies = conditional.per_class_accuracy(logits, requested, 3)
    assert accuracies[2] == 1.0 and accuracies[0] < 1.0
    scored = {"fid": 1.0, "kid": (0.0, 0.0), "precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}
    page = metrics_html(FinalMetrics(values={**scored, **values}, num_samples=60, reference="folder"))
    assert_printed(metrics_table(page)["class accuracy"], conditional.class_accuracy(logits, requested))
    rows = class_table(page)
    assert list(rows) == ["b", "a", "c", "mean"]
    for index, name in enumerate(["b", "a", "c"]):
        assert_printed(rows[name][0], distances[name])
        assert_printed(rows[name][1], accuracies[index])
    assert_printed(rows["mean"][0], mean)
    assert_printed(rows["mean"][1], sum(accuracies) / 3)
    unlabelled = class_values(generated, SimpleNamespace(labels=None), requested, ("b", "a", "c"), 3)
    assert "fid_intra_class_mean" not in unlabelled and class_table(metrics_html(FinalMetrics(
        values={**scored, **unlabelled})))["b"][0] == "–"
    plain = metrics_html(FinalMetrics(values=scored))
    assert "class accuracy" not in plain and "intra-class FID" not in plain


def test_report_of_a_conditional_run_has_a_row_per_class(tmp_path):
    """A tiny --conditional GAN run with FID on writes its report: the final table's class accuracy is the one it
    logged (the same samples, the same classes), the per-class table has a row for each digit and the mean, and the
    FID evaluations show the logged class accuracy."""
    from helpers import train_to_completion

    run = tmp_path / "run"
    train_to_completion("train_gan.py", run, *TINY, *tiny_flags(latent_dim=8, fid_every=2), "--conditional",
                        "--num-fid-samples", "60")
    page = (run / "report.html").read_text()
    (logged,) = [record for record in metrics_records(run) if "fid" in record]
    assert_printed(metrics_table(page)["class accuracy"], logged["class_accuracy"])
    rows = class_table(page)
    assert list(rows) == [*"0123456789", "mean"] and all(fid != "–" for fid, _ in rows.values())
    assert_printed(rows["mean"][1], logged["class_accuracy"])  # 6 samples of each class: the mean of the rows
    assert "<th>class-accuracy</th>" in page


def test_sample_scores_run_on_the_runs_device(monkeypatch):
    """KID and the k-NN scores (the reference split's N x N distances) are computed on the device the report is
    given (the run's accelerator), not on the CPU the features arrive on."""
    from genvision.config import ReportConfig
    from genvision.metrics import scores
    from genvision.report import sample_scores

    devices = []

    def recorder(result):
        def score(*args, device=None, **kwargs):
            devices.append(device)
            return result
        return score

    monkeypatch.setattr(scores, "kernel_inception_distance", recorder((0.0, 0.0)))
    monkeypatch.setattr(scores, "manifold_scores", recorder({"precision": 1.0, "recall": 1.0, "density": 1.0,
                                                             "coverage": 1.0}))
    features = SimpleNamespace(features=torch.zeros(4, 2), logits=None)
    values = sample_scores(features, features, 0, ReportConfig(), torch.device("meta"))
    assert devices == [torch.device("meta")] * 2 and values["precision"] == values["coverage"] == 1.0


def test_vae_report_from_the_command(vae_report, runs):
    path, stdout = vae_report
    run, _ = runs["vae"]
    assert stdout.strip() == str(path) and path.is_file()
    page = path.read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert "held-out negative ELBO" in page and f"{summary['test_negative_elbo_nats']:.2f}" in page
    assert f"{summary['test_bits_per_dim']:.4f} bits/dim" in page
    assert "held-out inputs above their reconstructions" in page and "final.png" in page
    assert "100 samples (seed 0)" in page and "FID evaluations" not in page  # FID was off for this run
    assert len(data_uris(page)) >= 4


def test_run_with_fid_off_gets_a_report_without_the_metrics_table(runs, tmp_path):
    run, stdout = runs["vae"]
    assert "report " in stdout  # written by training.finish (then replaced by the vae_report fixture's page)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    from genvision.config import ReportConfig
    from genvision.report import write_report

    page = write_report(copy, ReportConfig(run_dir=str(copy), num_samples=0), "cpu").read_text()
    assert "Final metrics not computed" in page and "<td>KID</td>" not in page


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'  # markup a shared run folder could carry


def test_markup_in_a_run_folder_is_shown_as_text_never_as_html(runs, tmp_path):
    """A run folder from someone else: markup in its config.json (a value and a key, the dataset in the title) and
    in a metrics.jsonl key reaches the page escaped, as text: the page holds none of its tags."""
    from genvision.config import ReportConfig
    from genvision.report import write_report

    run, _ = runs["vae"]
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    saved = json.loads((copy / "config.json").read_text())
    saved["config"].update({"dataset": HOSTILE, "report_to": HOSTILE, HOSTILE: 1})
    (copy / "config.json").write_text(json.dumps(saved))
    with open(copy / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 99, HOSTILE: 1.0}) + "\n")
    page = write_report(copy, ReportConfig(run_dir=str(copy), num_samples=0), "cpu").read_text()
    assert "<script" not in page.lower() and "<img src=x" not in page  # no markup of the run folder's is live
    assert page.count("&lt;script&gt;") >= 3  # the title, the config value and key: shown as text, not dropped


def test_report_failure_in_finish_is_one_warning_line(tmp_path, monkeypatch, capsys):
    """training.finish: summary.json, final.png and the closing line survive a broken report."""
    import genvision.report
    from genvision.config import GANConfig
    from genvision.training import finish
    from genvision.training.loop import ScheduleState

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(genvision.report, "write_report", broken)
    (tmp_path / "config.json").write_text("{}")
    task = SimpleNamespace(kind="gan", loss_keys=("d_loss",), fixed_noise=torch.zeros(2, 3), fixed_uniforms=None,
                           final_metrics=dict,
                           prior=lambda: None,
                           sampler=lambda: (lambda z: torch.zeros(len(z), 1, 4, 4)))
    accelerator = SimpleNamespace(is_main_process=True, device=torch.device("cpu"), wait_for_everyone=lambda: None)
    state = ScheduleState(step=5)
    summary = finish.finish(task, GANConfig(), accelerator, tmp_path, state, None)
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("warning: ") and "RuntimeError: boom second line" in err
    assert out.strip().splitlines()[-1].startswith(f"run folder {tmp_path}")
    assert summary["step"] == 5 and json.loads((tmp_path / "summary.json").read_text())["wall_time_s"] >= 0
    assert (tmp_path / "final.png").is_file() and not (tmp_path / "report.html").exists()


def test_throughput_is_total_images_over_total_time():
    from genvision.report import throughput

    logged = [{"step": 10, "img_per_s": 100.0}, {"step": 10, "fid": 3.0}, {"step": 30, "img_per_s": 50.0},
              {"step": 20, "img_per_s": 80.0}]  # the last: a resumed session that re-logs an earlier step
    assert throughput(logged) == pytest.approx(30 / (10 / 100 + 20 / 50))
    assert throughput([]) is None


@pytest.mark.parametrize("case", ["missing", "file", "plain-folder", "classifier-run", "corrupt-config",
                                  "num-samples-2", "bootstrap-negative"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(runs, tmp_path, case):
    target, extra = tmp_path / case, []
    if case == "file":
        target.write_text("x")
    elif case in ("plain-folder", "classifier-run", "corrupt-config"):
        target.mkdir()
        (target / "a.png").write_bytes(b"")
        if case == "classifier-run":
            (target / "config.json").write_text(json.dumps({"kind": "classifier", "config": {}}))
        if case == "corrupt-config":
            (target / "config.json").write_text("{ not json")
    elif case != "missing":  # bad flags on a real run
        target = runs["vae"][0]
        extra = ["--num-samples", "2"] if case == "num-samples-2" else ["--bootstrap", "-1"]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    report_before = (runs["vae"][0] / "report.html").stat().st_mtime_ns
    code, stdout, stderr = cli("report", target, *extra)
    assert stdout == ""
    assert_one_line_error(code, stderr, command="report")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (runs["vae"][0] / "report.html").stat().st_mtime_ns == report_before


def test_library_refuses_a_folder_that_is_not_a_run(tmp_path):
    from genvision.report import write_report

    with pytest.raises(UsageError, match="not a training run folder"):
        write_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(CHROMIUM is None and not REQUIRE_CHROMIUM,
                    reason="headless chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    from PIL import Image

    assert CHROMIUM is not None, "GENVISION_REQUIRE_CHROMIUM=1 but chromium is not installed (apt-get install chromium)"
    shot = tmp_path / "shot.png"
    page = runs["gan"][0] / "report.html"
    process = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                              f"--screenshot={shot}", "--window-size=1200,1600", page.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 0 and shot.is_file(), process.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (1600, 1200, 3)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100


# ---------------------------------------------------------------------------------------------------------------
# Run folders from others: a decompression bomb among the PNGs, a hostile dataset in config.json.


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")  # as genvision.imagefile sets it
@pytest.mark.parametrize("limit", [6000, 4096])  # PIL alone: a warning at 6000 (the page is written), an error at 4096
@pytest.mark.parametrize("kind, png", [("gan", "samples/step-000002.png"), ("gan", "final.png"),
                                       ("vae", "samples/reconstructions-step-000002.png")])
def test_decompression_bomb_in_a_run_folder_is_one_line(tmp_path, monkeypatch, limit, kind, png):
    """The report embeds the run folder's PNGs: one over PIL.Image.MAX_IMAGE_PIXELS (lowered here, so a 100 x 100
    PNG stands for a 12000 x 12000 one) is refused in one line, exit 2, and no page is written."""
    from PIL import Image

    import genvision.imagefile

    genvision.imagefile.configure_pil()  # first: genvision's first image sets the limit the test then lowers

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"kind": kind, "config": {}}))
    Image.new("L", (16, 16)).save(run / "samples" / "step-000001.png")
    Image.new("1", (100, 100)).save(run / png)
    code, stdout, stderr = cli("report", run, "--num-samples", "0")
    assert stdout == ""
    assert_one_line_error(code, stderr, f"cannot read image {run / png}: 10000 pixels exceeds the limit of {limit} "
                          "pixels per image", "decompression bomb", command="report")
    assert not (run / "report.html").exists()


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_report_of_a_run_whose_config_names_a_hostile_cifar10_runs_nothing(runs, tmp_path):
    """The report reads --fid-reference / --dataset and --data-root from the run folder's own config.json: a shared run
    pointing at a cifar-10-batches-py whose pickles run a command is refused in one line, and nothing runs."""
    import pickle

    from helpers import SHIPPED_CLASSIFIER

    run, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(runs["vae"][0], run)
    batches = tmp_path / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (batches / name).write_bytes(pickle.dumps(_RunsACommand(marker), protocol=2))
    saved = json.loads((run / "config.json").read_text())
    saved["config"].update(fid_reference="cifar10:test", data_root=str(tmp_path / "data"), features="classifier",
                           classifier=str(SHIPPED_CLASSIFIER))
    (run / "config.json").write_text(json.dumps(saved))
    report_before = (run / "report.html").read_bytes()
    code, stdout, stderr = cli("report", run, "--num-samples", "4")
    assert stdout == ""
    assert_one_line_error(code, stderr, str(batches / "test_batch"), "refusing to unpickle", command="report")
    assert not marker.exists() and (run / "report.html").read_bytes() == report_before


def test_augmentation_row_shows_the_logged_p():
    """A run with --augment logs aug_p: the training table gets its last value (and, adaptive, its range); a run
    without gets no row."""
    from genvision.report import RunRecord, augment_row, training_rows

    logged = [{"step": 1, "d_loss": 1.0, "aug_p": 0.0}, {"step": 2, "fid": 3.0}, {"step": 3, "aug_p": 0.32},
              {"step": 4, "aug_p": 0.16}]
    adaptive = RunRecord(Path("run"), "gan", "", {"augment": "color,cutout", "augment_target": 0.6}, logged, None)
    label, value, detail = augment_row(adaptive)
    assert (label, value) == ("augmentation probability", "0.160")
    assert "--augment color,cutout" in detail and "target r_t = E[sign D(real)] of 0.6" in detail
    assert "within [0.000, 0.320]" in detail
    assert augment_row(adaptive) in training_rows(adaptive)
    fixed = RunRecord(Path("run"), "gan", "", {"augment": "translation", "augment_target": 0.0},
                      [{"step": 1, "aug_p": 0.5}], None)
    assert augment_row(fixed)[1] == "0.500" and augment_row(fixed)[2].endswith("; fixed")
    plain = RunRecord(Path("run"), "gan", "", {}, [{"step": 1, "d_loss": 1.0}], None)
    assert augment_row(plain) is None
    assert not any(row[0] == "augmentation probability" for row in training_rows(plain))
