"""The content cache of feature extraction: (file bytes, settings) -> embedding.

- :class:`FileHasher` gives each audio file a sha256 of its bytes. Re-reading a whole
  dataset (UrbanSound8K: 6 GB) on every run would not be instant, so it keeps a stat index
  (size, mtime, inode -> hash) and re-reads only files whose stat changed. As git does with
  its index, an entry is trusted only if the file's mtime is clearly older than the moment
  it was hashed (``RACY_NS``): a file rewritten within the timestamp granularity right after
  hashing is hashed again, not trusted.
- :class:`EmbeddingCache` maps content hashes to embeddings, one folder per
  :meth:`ExtractSettings.key <qmoe.data.extract.ExtractSettings.key>`. Each run that embeds
  something adds one shard (``.npz``, written atomically); many shards are merged into one.
  It is only a cache: an unreadable shard is ignored (and its clips embedded again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RACY_NS = 2_000_000_000  # 2 s: coarser than any file system's mtime granularity we meet
MAX_SHARDS = 8


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class FileHasher:
    """Content hashes of files, re-reading only files whose stat changed.

    Args:
        index_path: the JSON stat index (created on :meth:`save`).
    """

    def __init__(self, index_path: str | Path) -> None:
        self.index_path = Path(index_path)
        self._index: dict[str, list[int | str]] = {}
        self._dirty = False
        self.reads = 0  # files actually read by this instance (for tests and logs)
        try:
            loaded = json.loads(self.index_path.read_text())
            self._index = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            pass

    def hash(self, path: str | Path) -> str:
        """sha256 of the file's bytes (from the index when its stat is unchanged)."""
        path = Path(path)
        st = path.stat()
        key = str(path)
        entry = self._index.get(key)
        if (entry is not None and len(entry) == 5
                and entry[:3] == [st.st_size, st.st_mtime_ns, st.st_ino]
                and int(entry[3]) - st.st_mtime_ns > RACY_NS):
            return str(entry[4])
        hashed_at = time.time_ns()
        digest = sha256_file(path)
        self.reads += 1
        self._index[key] = [st.st_size, st.st_mtime_ns, st.st_ino, hashed_at, digest]
        self._dirty = True
        return digest

    def save(self) -> None:
        """Write the index atomically (only if something changed)."""
        if self._dirty:
            text = json.dumps(self._index, separators=(",", ":"))
            _atomic_write(self.index_path, lambda tmp: tmp.write_text(text))
            self._dirty = False


class EmbeddingCache:
    """Embeddings by content hash, for one set of extraction settings.

    Args:
        folder: the settings' folder (``<cache>/extract/<settings key>``).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._known: dict[str, np.ndarray] | None = None
        self._new_keys: list[str] = []
        self._new_rows: list[np.ndarray] = []

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.npz"))

    def _load(self) -> dict[str, np.ndarray]:
        if self._known is None:
            self._known = {}
            for shard in self._shards():
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        keys, X = z["keys"], z["X"]
                except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
                    log.warning("ignoring unreadable cache shard %s (%s)", shard, err)
                    continue
                self._known.update(zip(keys.tolist(), X))
        return self._known

    def lookup(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached embeddings among ``keys``."""
        known = self._load()
        return {k: known[k] for k in keys if k in known}

    def add(self, keys: Iterable[str], X: np.ndarray) -> None:
        """Remember new embeddings (written by :meth:`flush`)."""
        keys = list(keys)
        if keys:
            self._new_keys.extend(keys)
            self._new_rows.append(np.asarray(X, dtype=np.float32))
            self._load().update(zip(keys, np.asarray(X, dtype=np.float32)))

    def flush(self) -> None:
        """Write what was added as one shard; merge the shards when there are many."""
        if not self._new_keys:
            return
        X = np.concatenate(self._new_rows)
        self._write(self.folder / f"shard-{time.time_ns()}-{uuid.uuid4().hex[:8]}.npz", self._new_keys, X)
        self._new_keys, self._new_rows = [], []
        shards = self._shards()
        if len(shards) > MAX_SHARDS:
            known = self._load()
            merged = self.folder / f"shard-{time.time_ns()}-{uuid.uuid4().hex[:8]}.npz"
            self._write(merged, list(known), np.stack(list(known.values())))
            for old in shards:
                old.unlink(missing_ok=True)

    @staticmethod
    def _write(path: Path, keys: list[str], X: np.ndarray) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=np.asarray(keys, dtype=str), X=X)

        _atomic_write(path, write)

