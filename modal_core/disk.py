"""Writing files when the disk may fill: one clear error, and no partial file left behind."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modal_core.errors import StorageError


@contextmanager
def written_whole(target: str | Path, partial: str | Path | None = None) -> Iterator[None]:
    """Run the writing of `target` (a file or folder; its bytes go to `partial`, default
    `target` itself). When the disk fills, `partial` is removed and a `StorageError` names
    `target`, the bytes written before the disk filled and the space left."""
    target = Path(target)
    partial = Path(partial) if partial is not None else target
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        written = _size(partial)
        _remove(partial)
        free = shutil.disk_usage(_existing_parent(target)).free
        raise StorageError(
            f"no space left on device while writing {target}; it needs more than the {written} bytes written "
            f"before the disk filled ({free} bytes free); free some space and run again"
        ) from None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.is_file() else 0


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path
