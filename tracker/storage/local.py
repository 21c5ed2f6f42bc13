"""`LocalStore`: TRACKER_MEDIA_DIR, the one-machine default.

A download is written straight into the folder (atomically, by `download`); a copy is
written beside its name first and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tracker.storage.base import StorageError, Store, Stored, check, file_type, valid_name


class LocalStore(Store):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def path(self, name: str | None) -> Path | None:
        """The file for a stored name, if it exists inside the folder."""
        if not valid_name(name):
            return None
        root = self.root.resolve()
        path = (root / str(name)).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    @contextmanager
    def receive(self, name: str, tag: str = "") -> Iterator[Path]:
        check(name)
        yield self.root / name  # `download` writes it atomically in place, tagged meanwhile

    def put(self, name: str, source: Path) -> int:
        check(name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.put.part"
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, self.root / name)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink()
            raise StorageError(f"cannot write to the media directory ({exc.strerror})") from None
        return (self.root / name).stat().st_size

    def stat(self, name: str | None) -> Stored | None:
        path = self.path(name)
        if path is None:
            return None
        return Stored(size=path.stat().st_size, content_type=file_type(path.name, path))

    def names(self) -> set[str]:
        with suppress(OSError):
            return {p.name for p in self.root.iterdir() if valid_name(p.name) and p.is_file()}
        return set()

    def delete(self, name: str) -> None:
        path = self.path(name)
        if path is not None:
            path.unlink()
