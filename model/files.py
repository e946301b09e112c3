"""Small file helpers shared by the model and the indexer: hashing a file, reading JSON Lines."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

HASH_CHUNK = 1 << 20  # bytes read at a time: large files are hashed without being held in memory


def sha256_of_file(path: str | os.PathLike[str], chunk: int = HASH_CHUNK) -> str:
    """The hex sha256 of a file's bytes, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def jsonl_objects(
    text: str, source: str | os.PathLike[str], error: type[Exception], expected: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """("SOURCE:LINE", object) for each non-blank line of JSON Lines ``text``; a line that is not a JSON
    object raises ``error`` naming its place and ``expected`` (what an object should hold)."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise error(f"{where}: expected a JSON object with {expected}, got {line.strip()[:80]!r}")
        yield where, record
