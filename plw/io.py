"""File output that behaves like a file: atomic, umask-respecting, never replacing what it should not.

Every file plw writes goes through `atomic_path`: a temporary file beside the target, renamed onto
it only on success, with the permissions a plain `open(path, "w")` would give (0666 minus the
umask, e.g. 0644 under umask 022). Rules for an existing path:

- a symbolic link is followed: its target file is replaced and the link stays a link;
- a character device or a FIFO (`/dev/null`, `/dev/stdout`, a named pipe) is written to directly,
  never replaced;
- a directory or any other non-regular file is refused (an `OSError` naming the path, which the CLI
  prints as one line with exit code 2; nothing written).

`check_output_file` / `check_output_dir` run these checks up front, so that a command fails before
any work; `check_not_input` refuses an output that is one of the command's inputs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto `path` only on success.

    For a character device or FIFO the yielded path is `path` itself (written in place)."""
    path = Path(path)
    if _stream_like(path):
        yield path
        return
    path = resolve_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~current_umask())
        if path.exists() and not path.is_file():  # appeared meanwhile: still never replaced
            raise_not_regular(path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _stream_like(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def resolve_output(path: Path) -> Path:
    """Where a write to `path` lands: a symlink's target; OSError for a non-regular file."""
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file() and not _stream_like(path):
        raise_not_regular(path)
    return path


def raise_not_regular(path: Path):
    # OSError, not PLWError: io sits beside errors in the layer order. The CLI prints an OSError
    # as one line naming the path, with exit code 2.
    code = errno.EISDIR if path.is_dir() else errno.EEXIST
    kind = "a directory" if path.is_dir() else "not a regular file"
    raise OSError(code, f"exists and is {kind}; plw never replaces it", str(path))


def check_output_file(path: str | os.PathLike) -> None:
    """Fail before any work (OSError naming the path) if a file cannot be written at `path`."""
    path = Path(path)
    if _stream_like(path):
        return
    target = resolve_output(path)
    _check_writable_dir(target.parent, path)


def check_output_dir(path: str | os.PathLike) -> None:
    """Fail before any work if `path` is not (and cannot become) a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OSError(errno.ENOTDIR, "exists and is not a directory", str(path))
    _check_writable_dir(path, path)


def _check_writable_dir(directory: Path, shown: Path) -> None:
    ancestor = directory
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OSError(errno.ENOTDIR, f"cannot write here: {ancestor} is not a directory", str(shown))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, f"cannot write here: directory {ancestor} is not writable", str(shown))


def check_not_input(output: str | os.PathLike, inputs) -> None:
    """Refuse an output path that is (or links to) one of the inputs: it would overwrite its own data."""
    out = os.path.realpath(output)
    for given in inputs:
        if given is not None and Path(str(given)).exists() and os.path.realpath(str(given)) == out:
            raise OSError(errno.EEXIST, f"is also an input ({given}); write the output elsewhere", str(output))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(obj: Any) -> str:
    """plw's JSON file format: indented, keys in insertion order, numpy scalars and paths allowed."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json_text(obj))


def json_safe(obj: Any) -> Any:
    """JSON has no NaN/inf: the same structure with non-finite floats as None (null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
