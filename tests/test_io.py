import os
import stat

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


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_and_folders_follow_the_umask(tmp_path, umask_022):
    """Not tempfile's private 0600/0700: what a plain open()/mkdir() gives (0644/0755 under umask 022)."""
    write_json(tmp_path / "a.json", {"v": 1})
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "x.txt").write_text("x")
        with atomic_file(tmp / "nested.bin") as fh:
            fh.write(b"1")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "nested.bin").stat().st_mode) == 0o644
    os.chmod(tmp_path / "a.json", 0o640)  # a file replaced keeps the mode its owner gave it
    write_json(tmp_path / "a.json", {"v": 2})
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    os.umask(0o077)
    write_json(tmp_path / "b.json", {"v": 1})
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
