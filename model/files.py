"""Small file helpers shared by the model and the indexer."""

from __future__ import annotations

import hashlib
import os

HASH_CHUNK = 1 << 20  # bytes read at a time: large files are hashed without being held in memory


def sha256_of_file(path: str | os.PathLike[str], chunk: int = HASH_CHUNK) -> str:
    """The hex sha256 of a file's bytes, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
