"""Atomic writes (a stage's output appears complete or not at all), and reading arrays with clear errors.

Every stage writes into a temporary sibling of its target and renames it into place when done
(rename is atomic on one file system), so a crash never leaves a half-written folder or file
where a later stage, or a rerun, would take it for finished work.

``tempfile`` creates its files 0600 and folders 0700 (private to the user) whatever the umask; both helpers
give the result the mode a plain ``open``/``mkdir`` would have given it (0666/0777 less the umask, or the mode
of the file being replaced), so a report or dataset can be shared like any other file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flaresynth.errors import input_error


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; rename it to ``target`` on success.

    On an exception the temporary folder is removed and ``target`` is left untouched.
    With ``overwrite=True`` an existing ``target`` is replaced only after the new one is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise FileExistsError(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``target`` for writing; rename it over ``target`` when closed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        try:  # a replaced file keeps its mode, as with open(target, "w")
            os.fchmod(fd, stat.S_IMODE(target.stat().st_mode))
        except FileNotFoundError:
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path) as fh:
        return json.load(fh)


def read_folder_manifest(path: str | Path, what: str, make_with: str, files: tuple[str, ...], manifest_file: str,
                         fmt: str, keys: tuple[str, ...]) -> dict:
    """Check that folder ``path`` holds ``files`` and return its JSON manifest, checked for format and ``keys``.

    The one door of every flaresynth folder format (dataset, samples) starts here, so a missing folder, a
    missing file, a manifest that is not JSON or of another format version, or a missing key is the same
    one-line error naming the file: ``what`` names the format ("dataset"), ``make_with`` the command that
    writes it.
    """
    path = Path(path)
    if not path.is_dir():
        raise input_error(path, None, f"no such {what} folder (make one with `{make_with}`)")
    for name in files:
        if not (path / name).is_file():
            raise input_error(path / name, None, f"missing: not a complete flaresynth {what} folder")
    try:
        manifest = read_json(path / manifest_file)
    except (OSError, ValueError) as exc:
        raise input_error(path / manifest_file, None, f"not readable JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise input_error(path / manifest_file, None, "expected a JSON object")
    found = manifest.get("format")
    if found != fmt:
        # same family, other version: say so, since the fix is another flaresynth, not another folder
        known = isinstance(found, str) and found.startswith(fmt.split("/")[0] + "/")
        raise input_error(path / manifest_file, "format", f"{found!r}, expected {fmt!r}"
                          + (" (a format version this flaresynth does not read)" if known else ""))
    for key in keys:
        if key not in manifest:
            raise input_error(path / manifest_file, key, "missing")
    return manifest


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def open_npy(path: str | Path) -> np.ndarray:
    """Memory-map an ``.npy`` array for reading; a truncated or unreadable file is a one-line error naming it.

    numpy's own messages (``mmap length is greater than file size``, ``Failed to interpret file ... as a
    pickle``) name neither the file nor what happened to it; this checks the header against the file's size.
    """
    path = Path(path)
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read_header is not None:
                shape, _, dtype = read_header(fh)
                expected = fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                size = path.stat().st_size
                if size < expected:
                    raise input_error(path, None, f"truncated: {size} bytes, but its header announces a {dtype} array "
                                                  f"of shape {tuple(shape)} ({expected} bytes); an interrupted copy?")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise input_error(path, None, f"not a readable .npy array ({exc})") from None
