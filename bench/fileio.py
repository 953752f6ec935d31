"""Small file helpers shared by the cache, the artifacts and the engines."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from bench.errors import UserError


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Temporary file in the same folder, fsync, rename: a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; caches and results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable_folder(folder: str | os.PathLike, what: str, fix: str) -> Path:
    """`folder`, created if missing, once a file could be made in it (permissions alone do not
    tell: root writes anywhere but under a regular file or in /proc); else one line ending in `fix`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise UserError(f"{folder}: {what} cannot be written ({exc.strerror or exc}); {fix}") from None
    return folder


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for one-line error reports."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")
