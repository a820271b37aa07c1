"""Training on a dataset with no shipped classifier: FID is scored with InceptionV3 found in the torch hub cache, and
without weights anywhere the run fails before it writes anything."""

import json
import shutil

import pytest
from helpers import (ROOT, assert_one_line_error, hub_checkpoints, named_by_hash, noise_images, subprocess_env,
                     tiny_flags, wait, write_pngs)

pytest.importorskip("torch_fidelity")


def test_gan_on_a_folder_scores_with_inception_from_the_cache(tmp_path, inception_weights, start_process):
    write_pngs(noise_images(8, seed=2), tmp_path / "digits")
    name = named_by_hash(inception_weights)
    home = tmp_path / "torch-home"
    hub_checkpoints(home).mkdir(parents=True)
    shutil.copyfile(inception_weights, hub_checkpoints(home) / name)
    argv = [str(ROOT / "train_gan.py"), "--dataset", f"folder:{tmp_path / 'digits'}", "--num-steps", "2",
            *tiny_flags(latent_dim=8, fid_every=2), "--num-fid-samples", "4", "--sample-every", "0"]
    run = tmp_path / "run"
    # No weights anywhere (an empty hub cache, nothing listening at the URL), and weights in the cache: both at once.
    refused = start_process([*argv, "--out-dir", str(tmp_path / "refused")],
                            env=subprocess_env(TORCH_HOME=str(tmp_path / "empty-home")))
    scored = start_process([*argv, "--out-dir", str(run)],
                           env=subprocess_env(TORCH_HOME=str(home), GENVISION_INCEPTION_URL=f"http://127.0.0.1:9/{name}"))

    code, _, stderr = wait(refused)
    assert_one_line_error(code, stderr, "--download", "--inception-weights", "--classifier", "--fid-every 0",
                          command="train-gan")
    assert not (tmp_path / "refused").exists() and not (tmp_path / "empty-home").exists()

    code, stdout, stderr = wait(scored)
    assert code == 0, stderr[-3000:]
    assert "(inception features)" in stdout and "warning" not in stderr, stderr
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["features"] == "inception"  # saved resolved: a resume keeps the feature space
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fid_features"] == "inception" and summary["final_fid"] >= 0
    fids = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"fid"' in line]
    assert [record["step"] for record in fids] == [2]
    report = (run / "report.html").read_text()
    extractor = f"inception-v3-compat@{named_by_hash(inception_weights, '')[1:9]}"
    assert extractor in report
    meta = json.loads((run / "checkpoints" / "step-000002" / "checkpoint.json").read_text())
    assert meta["fid_extractor"].startswith(extractor)


def test_a_resumed_run_keeps_its_extractor(tmp_path):
    from types import SimpleNamespace

    from genvision.errors import UsageError
    from genvision.training.loop import check_same_extractor

    checkpoint = SimpleNamespace(path=tmp_path / "step-000002", meta={"fid_extractor": "inception-v3-compat@aaaa"})
    check_same_extractor(checkpoint, "inception-v3-compat@aaaa")
    check_same_extractor(None, "inception-v3-compat@bbbb")
    check_same_extractor(SimpleNamespace(path=tmp_path, meta={}), "inception-v3-compat@bbbb")  # older checkpoints
    with pytest.raises(UsageError, match="scored FID with inception-v3-compat@aaaa, but the extractor found now is "
                                         "inception-v3-compat@bbbb; pass --inception-weights"):
        check_same_extractor(checkpoint, "inception-v3-compat@bbbb")
