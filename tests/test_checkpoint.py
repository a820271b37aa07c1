"""Checkpoint folders: atomic commit, reading, listing, pruning, resolving a run folder, failure mid-write."""

import json
import os

import pytest
import torch

from genvision import checkpoint as ckpt
from genvision.errors import UsageError

WEIGHTS = {"generator": {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(3)},
           "discriminator": {"w": torch.ones(4, dtype=torch.float16)}}
STATE = {"step": 7, "noise": torch.arange(5, dtype=torch.uint8)[None], "data": {"epoch": 1, "position": 2},
         "best_fid": float("inf"), "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": []}}


def _save(folder, step=7, kind="gan", **meta):
    return ckpt.save_checkpoint(folder, {"kind": kind, "step": step, "config": {"base_channels": 4}, **meta},
                                WEIGHTS, {**STATE, "step": step})


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def test_save_and_read_round_trip(tmp_path):
    folder = _save(tmp_path / "checkpoints" / "step-000007", fid=1.5)
    assert folder == tmp_path / "checkpoints" / "step-000007"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "state.pt", "weights.safetensors"]
    assert _leftovers(folder.parent) == []
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta["kind"] == "gan" and meta["step"] == 7 and meta["fid"] == 1.5 and meta["genvision_version"]

    loaded = ckpt.read_checkpoint(folder)
    assert (loaded.kind, loaded.step, loaded.config) == ("gan", 7, {"base_channels": 4})
    assert loaded.roles() == {"generator", "discriminator"}
    for role, tensors in WEIGHTS.items():
        got = loaded.weights(role)
        assert got.keys() == tensors.keys()
        assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in tensors.items())
    assert loaded.weights("generator_ema") == {}
    state = loaded.state()
    assert state["step"] == 7 and state["data"] == {"epoch": 1, "position": 2} and state["best_fid"] == float("inf")
    assert torch.equal(state["noise"], STATE["noise"])
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], torch.ones(2))
    # a file inside the folder opens the folder; state.pt loads with weights_only=True
    assert ckpt.read_checkpoint(folder / "weights.safetensors").path == folder
    torch.load(folder / "state.pt", weights_only=True)


def test_refuses_to_overwrite(tmp_path):
    folder = _save(tmp_path / "step-000001", step=1)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(UsageError, match="already exists"):
        _save(folder, step=2)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fail_in", ["torch.save", "safetensors"])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, fail_in):
    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    if fail_in == "torch.save":
        monkeypatch.setattr(torch, "save", boom)
    else:
        import safetensors.torch

        monkeypatch.setattr(safetensors.torch, "save_file", boom)
    parent = tmp_path / "checkpoints"
    with pytest.raises(OSError, match="simulated"):
        _save(parent / "step-000003", step=3)
    assert list(parent.iterdir()) == []  # neither the checkpoint nor a temp folder
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_failure_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    good = _save(tmp_path / "checkpoints" / "step-000001", step=1)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # BaseException too: the temp folder is removed
        _save(tmp_path / "checkpoints" / "step-000002", step=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]
    assert ckpt.latest_checkpoint(tmp_path) == good


def test_list_latest_best_and_prune(tmp_path):
    for step in (3, 12, 1, 100):
        _save(tmp_path / "checkpoints" / f"step-{step:06d}", step=step)
    for step in (2, 12):
        _save(tmp_path / "checkpoints" / f"best-step-{step:06d}", step=step)
    # not checkpoints: a temp folder, an uncommitted folder, a stray file, a foreign name
    (tmp_path / "checkpoints" / ".tmp-step-000200-abc").mkdir()
    (tmp_path / "checkpoints" / ".tmp-step-000200-abc" / "checkpoint.json").write_text("{}")
    (tmp_path / "checkpoints" / "step-000300").mkdir()
    (tmp_path / "checkpoints" / "step-000400").write_text("not a folder")
    (tmp_path / "checkpoints" / "final").mkdir()

    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step-000001", "step-000003", "step-000012", "step-000100"]  # numeric order, not by name
    assert [p.name for p in ckpt.list_checkpoints(tmp_path, best=True)] == ["best-step-000002", "best-step-000012"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000100"
    assert ckpt.best_checkpoint(tmp_path).name == "best-step-000012"
    assert ckpt.list_checkpoints(tmp_path / "missing") == [] and ckpt.latest_checkpoint(tmp_path / "x") is None

    ckpt.prune(tmp_path, keep=2)
    remaining = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert remaining == [".tmp-step-000200-abc", "best-step-000012", "final", "step-000012", "step-000100",
                         "step-000300", "step-000400"]
    ckpt.remove_stale_temps(tmp_path)
    assert _leftovers(tmp_path / "checkpoints") == []
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000100"


def test_resolve_checkpoint(tmp_path):
    run = tmp_path / "run"
    _save(run / "checkpoints" / "step-000002", step=2)
    _save(run / "checkpoints" / "step-000004", step=4)
    assert ckpt.resolve_checkpoint(run).path.name == "step-000004"  # no best: the latest
    _save(run / "checkpoints" / "best-step-000002", step=2)
    assert ckpt.resolve_checkpoint(run).path.name == "best-step-000002"  # best wins
    assert ckpt.resolve_checkpoint(run / "checkpoints" / "step-000002").step == 2
    assert ckpt.resolve_checkpoint(run / "checkpoints" / "step-000004" / "state.pt").step == 4
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(UsageError, match="no committed checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "empty")


def test_read_checkpoint_errors_are_one_line_usage_errors(tmp_path):
    cases = {}
    cases["missing"] = tmp_path / "missing"
    cases["file"] = tmp_path / "random.bin"
    cases["file"].write_bytes(os.urandom(256))
    cases["no-meta"] = tmp_path / "no-meta"
    cases["no-meta"].mkdir()
    cases["garbage-meta"] = _save(tmp_path / "garbage-meta")
    (cases["garbage-meta"] / "checkpoint.json").write_bytes(b"\x00{not json")
    cases["no-kind"] = _save(tmp_path / "no-kind")
    (cases["no-kind"] / "checkpoint.json").write_text("[1, 2]")
    cases["incomplete"] = _save(tmp_path / "incomplete")
    (cases["incomplete"] / "state.pt").unlink()
    for name, path in cases.items():
        with pytest.raises(UsageError) as info:
            ckpt.read_checkpoint(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value), name

    corrupt = _save(tmp_path / "corrupt")
    (corrupt / "weights.safetensors").write_bytes(os.urandom(64))
    (corrupt / "state.pt").write_bytes(b"PK\x03\x04 truncated")
    loaded = ckpt.read_checkpoint(corrupt)  # meta is fine; the payload fails on use, as a UsageError
    with pytest.raises(UsageError, match="weights.safetensors"):
        loaded.weights("generator")
    with pytest.raises(UsageError, match="state.pt"):
        loaded.state()


def test_check_kind_and_architecture(tmp_path):
    loaded = ckpt.read_checkpoint(_save(tmp_path / "c", kind="vae"))
    with pytest.raises(UsageError, match="'vae' checkpoint, expected 'gan'"):
        ckpt.check_kind(loaded, "gan", "--resume")
    ckpt.check_kind(loaded, "vae", "--resume")
    ckpt.check_architecture(loaded, {"base_channels": 4, "other": 1}, ("base_channels",))
    with pytest.raises(UsageError, match=r"base_channels 4 vs 8"):
        ckpt.check_architecture(loaded, {"base_channels": 8}, ("base_channels",))


def test_prune_interrupted_mid_delete_never_lists_a_half_deleted_checkpoint(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        _save(tmp_path / "checkpoints" / f"step-{step:06d}", step=step)
    real_rmtree = ckpt.shutil.rmtree

    def killed_midway(path, ignore_errors=False):  # deletes one file, then the process "dies"
        os.unlink(os.path.join(path, "weights.safetensors"))
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.prune(tmp_path, keep=2)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    listed = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in listed] == ["step-000002", "step-000003"]
    for path in listed:  # everything listed is complete
        ckpt.read_checkpoint(path).weights("generator")
    assert _leftovers(tmp_path / "checkpoints") == [".tmp-step-000001-deleting"]
    ckpt.remove_stale_temps(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002", "step-000003"]


def _tree(folder):
    """Relative path -> file bytes ("dir" for a folder) below `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else "dir" for p in sorted(folder.rglob("*"))}


def test_prune_and_stale_temps_never_follow_a_linked_checkpoints_folder(tmp_path):
    """checkpoints/ a symbolic link to another run's checkpoints: pruning and stale-temp removal skip it."""
    outside = tmp_path / "outside"
    for step in (1, 2, 3):
        _save(outside / f"step-{step:06d}", step=step)
    _save(outside / "best-step-000001", step=1)
    _save(outside / "best-step-000002", step=2)
    (outside / ".tmp-step-000004-abc").mkdir()
    before = _tree(outside)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(outside)
    ckpt.prune(run, keep=1)
    ckpt.remove_stale_temps(run)
    assert _tree(outside) == before and (run / "checkpoints").is_symlink()


def test_pruning_removes_a_linked_checkpoint_or_temp_as_a_link(tmp_path):
    """A link among the checkpoints (a step-* or a .tmp-* name) is removed itself; what it points to stays."""
    outside = tmp_path / "outside"
    _save(outside / "step-000001", step=1)
    (outside / "stale").mkdir()
    before = _tree(outside)
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "step-000001").symlink_to(outside / "step-000001")
    (folder / ".tmp-step-000009-abc").symlink_to(outside / "stale")
    for step in (2, 3):
        _save(folder / f"step-{step:06d}", step=step)
    ckpt.prune(tmp_path / "run", keep=2)
    ckpt.remove_stale_temps(tmp_path / "run")
    assert sorted(p.name for p in folder.iterdir()) == ["step-000002", "step-000003"]
    assert _tree(outside) == before


def test_save_checkpoint_refuses_a_link_at_its_path(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-000007").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="already exists"):
        _save(tmp_path / "checkpoints" / "step-000007")
    assert not (tmp_path / "elsewhere").exists() and _leftovers(tmp_path / "checkpoints") == []
