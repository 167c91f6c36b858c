import pytest

from flaresynth.io import atomic_dir, atomic_file, read_json, write_json


def test_atomic_dir_appears_only_when_complete(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("partial")
            raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "done.txt").write_text("ok")
        assert not target.exists()
    assert (target / "done.txt").read_text() == "ok"
    with pytest.raises(FileExistsError):
        with atomic_dir(target):
            pass
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]


def test_atomic_file_keeps_old_content_on_crash(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"v": 1})
    with pytest.raises(ValueError):
        with atomic_file(path, "w") as fh:
            fh.write("{broken")
            raise ValueError
    assert read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
