"""benchmarks/extractor_agreement.py: its ranking and Kendall's tau against a hand-worked example, the per-block
columns of an extractor that names `feature_blocks`, its one-line errors, and the whole pipeline end to end in
--quick mode (trained once, then reused)."""

import importlib.util
import json
import sys

import pytest
import torch

from genvision.data import load_dataset
from genvision.errors import UsageError
from genvision.metrics.extractors import ClassifierExtractor
from genvision.metrics.sources import extract
from genvision.metrics.stats import frechet_distance
from helpers import ROOT, SHIPPED_CLASSIFIER, run_python

SCRIPT = ROOT / "benchmarks" / "extractor_agreement.py"
PANEL = ["real", "dcgan-4", "dcgan-2", "vae-gmm", "vae-normal", "collapsed", "blurred", "noised"]


@pytest.fixture(scope="module")
def agreement():
    """The benchmark script as a module."""
    spec = importlib.util.spec_from_file_location("extractor_agreement", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_one_swap_among_four_gives_tau_four_sixths(agreement):
    a = {"w": 1.0, "x": 2.0, "y": 3.0, "z": 4.0}
    b = {"w": 10.0, "x": 30.0, "y": 20.0, "z": 40.0}  # x and y swapped: 5 of the 6 pairs concordant, 1 discordant
    assert agreement.ranking(b) == ["w", "y", "x", "z"]
    assert agreement.ranks(b) == {"w": 1, "y": 2, "x": 3, "z": 4}
    tau, _ = agreement.kendall_tau(a, b)
    assert tau == pytest.approx((5 - 1) / 6)
    assert agreement.kendall_tau(a, {k: -v for k, v in a.items()})[0] == pytest.approx(-1.0)
    pairs = agreement.agreement({"first": a, "second": b, "third": a})
    assert [(p["a"], p["b"]) for p in pairs] == [("first", "second"), ("first", "third"), ("second", "third")]
    assert [p["tau"] for p in pairs] == pytest.approx([4 / 6, 1.0, 4 / 6])
    with pytest.raises(ValueError, match="different entries"):
        agreement.kendall_tau(a, {"w": 1.0})


def test_each_named_feature_block_is_ranked_by_its_own_frechet_distance(agreement):
    extractor = ClassifierExtractor.from_file(SHIPPED_CLASSIFIER)
    width = extractor.num_features  # the shipped classifier names its two blocks
    assert agreement.feature_blocks(extractor) == [("semantic", 0, 32), ("low-level", 32, width)]
    extractor.feature_blocks = (("semantic", width - 32), ("low-level", 32))
    assert agreement.feature_blocks(extractor) == [("semantic", 0, width - 32), ("low-level", width - 32, width)]
    as_triples = (("semantic", 0, width - 32), ("low-level", width - 32, width))
    for named in ({"semantic": width - 32, "low-level": 32}, as_triples):  # the other spellings it accepts
        extractor.feature_blocks = named
        assert agreement.feature_blocks(extractor) == list(as_triples)
    held_out = load_dataset("mnist5k:test").images
    reference, entries = held_out[:200], [agreement.Entry("a", "", held_out[200:300]),
                                          agreement.Entry("b", "", held_out[300:400].flip(-1))]
    columns = agreement.score({"s": extractor}, entries, reference, 500, "cpu")
    assert list(columns) == ["s", "s: semantic", "s: low-level"]
    ref_mu, ref_sigma = extract(reference, extractor)[0].mean_and_covariance()
    mu, sigma = extract(entries[1].images, extractor)[0].mean_and_covariance()
    assert columns["s"]["b"] == pytest.approx(frechet_distance(mu, sigma, ref_mu, ref_sigma))
    low = slice(width - 32, width)
    assert columns["s: low-level"]["b"] == pytest.approx(
        frechet_distance(mu[low], sigma[low, low], ref_mu[low], ref_sigma[low, low]))
    assert set(columns["s: semantic"]) == {"a", "b"} and columns["s: semantic"]["b"] != columns["s"]["b"]
    extractor.feature_blocks = (("semantic", 8),)
    with pytest.raises(UsageError, match=f"cover 8 columns, it has {width} features"):
        agreement.feature_blocks(extractor)
    extractor.feature_blocks = (("semantic", 0, 8), ("low-level", 16, width))
    with pytest.raises(UsageError, match="not contiguous"):
        agreement.feature_blocks(extractor)


@pytest.mark.parametrize("flags, words", [
    (["--gan-steps", "500,x"], ["--gan-steps must be comma-separated step counts > 0", "'500,x'"]),
    (["--num-samples", "-3"], ["--num-samples must be > 0, got -3"]),
    (["--classifier", "missing.safetensors"], ["missing.safetensors does not exist"]),
    (["--json", "no-such-folder/agreement.json"], ["--json no-such-folder/agreement.json: folder no-such-folder "
                                                   "does not exist"]),
])
def test_bad_input_is_one_line_and_exit_2(agreement, monkeypatch, capsys, tmp_path, flags, words):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--quick", "--work-dir", str(tmp_path / "work"), *flags])
    assert agreement.main() == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("extractor_agreement: error: ")
    for word in words:
        assert word in captured.err
    assert not (tmp_path / "work").exists()  # refused before anything is trained


def test_the_panels_vae_keeps_0_2_0s_mixture_whatever_todays_default(agreement):
    from genvision.config import VAEConfig

    assert agreement.panel_vae_options(quick=False) == {"prior_components": 20} != {
        "prior_components": VAEConfig().prior_components}
    assert agreement.panel_vae_options(quick=True)["prior_components"] == 2  # --quick's tiny mixture over it


@pytest.mark.slow
def test_quick_mode_trains_once_and_prints_the_table_and_json(tmp_path):
    work, out = tmp_path / "work", tmp_path / "agreement.json"
    argv = [str(SCRIPT), "--quick", "--work-dir", str(work), "--json", str(out)]
    first = run_python(argv)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "training the DCGAN" in first.stderr and "trained now" in first.stdout
    panel_gan = json.loads((work / "dcgan" / "config.json").read_text())["config"]
    assert (panel_gan["lr"], panel_gan["beta1"], panel_gan["ema_bn_batches"]) == (2e-4, 0.5, 0)  # 0.2.0's recipe,
    # whatever today's default is
    rows = [line for line in first.stdout.splitlines() if line.startswith("| ")]
    assert "| generator | N | shipped | shipped: semantic | shipped: low-level | independent |" in rows
    assert [row.split(" | ")[0][2:] for row in rows if " | 64 | " in row or " | 500 | " in row] == PANEL
    assert "shipped vs independent: tau = " in first.stdout
    assert "shipped vs independent on the trained generators alone (without blurred and noised): tau = " in first.stdout
    result = json.loads(out.read_text())
    assert {"panel", "feature_spaces", "independent", "fid", "ranking", "kendall_tau", "seconds", "cpu"} <= set(result)
    assert [entry["name"] for entry in result["panel"]] == PANEL and len(PANEL) >= 8
    assert list(result["fid"]) == ["shipped", "shipped: semantic", "shipped: low-level", "independent"]
    assert set(result["fid"]["independent"]) == set(PANEL)
    assert -1 <= result["kendall_tau_shipped_independent_without_post_processed"] <= 1
    assert list(result["kendall_tau_vs_independent_without_post_processed"]) == [
        "shipped", "shipped: semantic", "shipped: low-level"]
    assert "each feature space vs independent on the trained generators alone: shipped " in first.stdout
    assert sorted(result["ranking"]["shipped"]) == sorted(PANEL)
    assert result["ranking"]["shipped"][0] == result["ranking"]["independent"][0] == "real"  # 4 steps cannot compete
    assert result["feature_spaces"]["independent"]["extractor"] == "independent-lenet5"
    assert 0 <= result["independent"]["held_out_accuracy"] <= 1
    assert ("shipped", "independent") in [(p["a"], p["b"]) for p in result["kendall_tau"]]
    assert all(-1 <= pair["tau"] <= 1 for pair in result["kendall_tau"])

    again = run_python(argv[:-2])  # a rerun reuses the runs and the independent extractor: it only rescores
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training the" not in again.stderr and "trained now" not in again.stdout
    table = [line for line in first.stdout.splitlines() if line.startswith("| ")]
    assert [line for line in again.stdout.splitlines() if line.startswith("| ")] == table  # seeded: same numbers
