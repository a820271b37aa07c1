"""fileio: atomic writes keep the old file on failure, leave no temp files and use ordinary permissions."""

import json
import os

import pytest

from genvision.errors import UsageError
from genvision.fileio import append_jsonl, atomic_save, atomic_write, check_output_path, write_json


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_atomic_write_replaces_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as handle:
        handle.write(b"new contents")
        assert target.read_bytes() == b"old"  # not visible until the writer finishes
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_keeps_old_file_when_writer_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_on_new_path_failure_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "never.txt", "w") as handle:
            handle.write("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_written_files_have_plain_permissions(tmp_path):
    expected = 0o666 & ~_umask()
    with atomic_write(tmp_path / "a.bin") as handle:
        handle.write(b"x")
    assert _mode(tmp_path / "a.bin") == expected
    write_json(tmp_path / "b.json", {"a": 1})
    assert _mode(tmp_path / "b.json") == expected

    def writer(tmp: str) -> None:  # a library that recreates the file with 0600, like safetensors does
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"payload")
        os.close(fd)

    atomic_save(tmp_path / "c.bin", writer)
    assert (tmp_path / "c.bin").read_bytes() == b"payload"
    assert _mode(tmp_path / "c.bin") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json", "c.bin"]


def test_atomic_save_keeps_old_file_when_writer_raises(tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")

    def writer(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"partial")
        raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        atomic_save(target, writer)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_atomic_save_with_safetensors(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {"x": torch.arange(6, dtype=torch.uint8).reshape(2, 3)}
    atomic_save(tmp_path / "t.safetensors", lambda tmp: save_file(tensors, tmp))
    assert torch.equal(load_file(tmp_path / "t.safetensors")["x"], tensors["x"])
    assert _mode(tmp_path / "t.safetensors") == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "grid.png") == tmp_path / "grid.png"
    with pytest.raises(UsageError) as missing:
        check_output_path(tmp_path / "nowhere" / "grid.png", "--out")
    message = str(missing.value)
    assert "--out" in message and str(tmp_path / "nowhere") in message and "\n" not in message
    with pytest.raises(UsageError) as folder:
        check_output_path(tmp_path)
    assert "--output" in str(folder.value) and "folder" in str(folder.value)
    assert check_output_path("relative.png").name == "relative.png"  # parent "." exists


def test_write_json_round_trip_and_append_jsonl(tmp_path):
    record = {"name": "run", "values": [1, 2.5, None], "nested": {"ok": True}, "unicode": "é"}
    write_json(tmp_path / "c.json", record)
    text = (tmp_path / "c.json").read_text()
    assert text.endswith("\n") and json.loads(text) == record
    write_json(tmp_path / "c.json", {"replaced": 1})
    assert json.loads((tmp_path / "c.json").read_text()) == {"replaced": 1}
    with pytest.raises(TypeError):
        write_json(tmp_path / "c.json", {"bad": object()})
    assert json.loads((tmp_path / "c.json").read_text()) == {"replaced": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]

    append_jsonl(tmp_path / "m.jsonl", {"step": 1})
    append_jsonl(tmp_path / "m.jsonl", {"step": 2})
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"step": 1}, {"step": 2}]


def outside_and_run(tmp_path, name: str, text: str) -> tuple:
    """(a folder outside the run holding `name` with `text`, an empty run folder): where links point, where they are."""
    outside, run = tmp_path / "outside", tmp_path / "run"
    outside.mkdir()
    run.mkdir()
    (outside / name).write_text(text)
    return outside, run


def test_append_jsonl_refuses_a_symbolic_link_and_writes_nothing_through_it(tmp_path):
    """A dangling link (its target would be created outside the folder) and a live one (its target appended to)."""
    outside, run = outside_and_run(tmp_path, "kept.jsonl", '{"step": 0}\n')
    for name, target in (("dangling.jsonl", outside / "created.jsonl"), ("live.jsonl", outside / "kept.jsonl")):
        (run / name).symlink_to(target)
        with pytest.raises(UsageError) as refused:
            append_jsonl(run / name, {"step": 1})
        assert str(refused.value) == (f"{run / name} is a symbolic link; refusing to append to it (expected a plain "
                                      "file: a genvision run folder holds no links)")
        assert (run / name).is_symlink()
    assert sorted(p.name for p in outside.iterdir()) == ["kept.jsonl"]
    assert (outside / "kept.jsonl").read_text() == '{"step": 0}\n'


def test_atomic_writes_replace_a_symbolic_link_not_its_target(tmp_path):
    """os.replace renames over the link itself: the path becomes a plain file, the target is untouched."""
    outside, run = outside_and_run(tmp_path, "target.json", "theirs")
    (run / "config.json").symlink_to(outside / "target.json")
    (run / "grid.png").symlink_to(outside / "absent.png")
    write_json(run / "config.json", {"ours": 1})
    atomic_save(run / "grid.png", lambda tmp: open(tmp, "wb").write(b"png"))
    for name in ("config.json", "grid.png"):
        assert not (run / name).is_symlink() and (run / name).is_file()
    assert json.loads((run / "config.json").read_text()) == {"ours": 1} and (run / "grid.png").read_bytes() == b"png"
    assert sorted(p.name for p in outside.iterdir()) == ["target.json"]
    assert (outside / "target.json").read_text() == "theirs"
