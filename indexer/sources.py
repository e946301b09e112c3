"""Which files to ingest: folders walked recursively, single files, CSV/JSONL manifests, shards."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.files import jsonl_objects

from .collections import check_collection_name
from .errors import IndexerError, ManifestError

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})
MANIFEST_FIELDS = ("path", "title", "collection", "metadata", "subtitles")  # other columns or keys are metadata


@dataclass
class Source:
    """One video to ingest: its absolute path and what the manifest says about it."""

    path: Path
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    collection: str | None = None  # None: a known video stays where it is, a new one goes to ``default``
    subtitles: list[Path] = field(default_factory=list)  # subtitle files named for it (besides those beside it)


@dataclass
class Discovery:
    sources: list[Source]
    ignored: list[Path]  # files in walked folders without a video suffix


def canonical(path: Path) -> Path:
    """The absolute path a video is known by: symlinks resolved, except a dangling one (kept as named)."""
    path = path.expanduser()
    return path.resolve() if path.exists() else Path(os.path.abspath(path))


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def discover(
    paths: Iterable[str | Path], manifest: str | Path | None = None, collection: str | None = None
) -> Discovery:
    """Sources from files and folders (recursive, video suffixes only) and a manifest, each path once.

    A file named on the command line or in a manifest is always attempted, whatever its suffix: if it is not
    a video, ingestion records it as failed. A manifest's title, metadata and collection win over a bare
    listing; ``collection`` (a checked name) is that of every source whose manifest row names none.
    """
    found: dict[Path, Source] = {}
    ignored: list[Path] = []

    def add(source: Source) -> None:
        known = found.get(source.path)
        if known is None:
            found[source.path] = source
            return
        known.title = source.title or known.title
        known.metadata = {**known.metadata, **source.metadata}
        known.collection = source.collection or known.collection
        known.subtitles = list(dict.fromkeys([*known.subtitles, *source.subtitles]))

    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for file in _walk(path):
                if is_video_name(file):
                    add(Source(canonical(file)))
                else:
                    ignored.append(file)
        elif path.exists() or path.is_symlink():
            add(Source(canonical(path)))
        else:
            raise IndexerError(f"{raw}: no such file or folder")
    if manifest is not None:
        for source in read_manifest(manifest):
            add(source)
    ignored = [p for p in ignored if canonical(p) not in found]  # also named explicitly: not ignored
    if collection is not None:
        for source in found.values():
            source.collection = source.collection or collection
    return Discovery(sorted(found.values(), key=lambda s: str(s.path)), sorted(ignored))


def _walk(folder: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return files


def read_manifest(manifest: str | Path) -> list[Source]:
    """Rows of a CSV (header with ``path``, optional ``title``, ``collection``, ``metadata`` as JSON,
    ``subtitles``, other columns into metadata) or JSONL manifest (objects with ``path``, optional ``title``,
    ``collection``, ``metadata`` and ``subtitles``, other keys into metadata). ``subtitles`` names subtitle
    files: in CSV one path, several separated by ``;``, or a JSON list; in JSONL a path or a list of paths.
    Relative paths are relative to the manifest's folder."""
    manifest = Path(manifest).expanduser()
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest}: no such file")
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {manifest}: cannot read it as UTF-8 text ({exc})") from exc
    if manifest.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = list(jsonl_objects(text, manifest, ManifestError, "a 'path'"))
    elif manifest.suffix.lower() in (".csv", ".tsv"):
        rows = _csv_rows(manifest, text)
    else:
        raise ManifestError(f"manifest {manifest}: expected a .csv or .jsonl file")
    return [_source(manifest, where, row) for where, row in rows]


def _csv_rows(manifest: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if manifest.suffix.lower() == ".tsv" else ",")
    if reader.fieldnames is None or "path" not in [f.strip() for f in reader.fieldnames]:
        raise ManifestError(f"{manifest}: the header must name a 'path' column, got {reader.fieldnames}")
    rows = []
    for number, row in enumerate(reader, 2):
        clean = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if "metadata" in clean:
            raw = clean.pop("metadata")
            try:
                parsed = json.loads(raw) if raw else {}
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{manifest}:{number}: 'metadata' is not valid JSON ({exc.msg})") from exc
            clean["metadata"] = parsed
        rows.append((f"{manifest}:{number}", clean))
    return rows


def _source(manifest: Path, where: str, row: dict[str, Any]) -> Source:
    raw = row.get("path")
    if not isinstance(raw, str) or not raw.strip():
        raise ManifestError(f"{where}: missing 'path'")
    title = row.get("title") or None
    if title is not None and not isinstance(title, str):
        raise ManifestError(f"{where}: 'title' must be a string, got {type(title).__name__}")
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ManifestError(f"{where}: 'metadata' must be an object, got {type(metadata).__name__}")
    collection = row.get("collection")
    if collection in ("", None):
        collection = None  # an empty cell: the run's --collection
    elif not isinstance(collection, str):
        raise ManifestError(f"{where}: 'collection' must be a string, got {type(collection).__name__}")
    else:
        collection = check_collection_name(collection, where)
    extra = {k: v for k, v in row.items() if k not in MANIFEST_FIELDS and v not in ("", None)}
    in_csv = manifest.suffix.lower() in (".csv", ".tsv")
    subtitles = [_manifest_path(manifest, name) for name in _subtitle_names(row.get("subtitles"), where, in_csv)]
    return Source(_manifest_path(manifest, raw), title, {**extra, **metadata}, collection, subtitles)


def _manifest_path(manifest: Path, raw: str) -> Path:
    path = Path(raw.strip()).expanduser()
    return canonical(path if path.is_absolute() else manifest.parent / path)


def _subtitle_names(value: Any, where: str, in_csv: bool) -> list[str]:
    """A manifest row's ``subtitles``: nothing, a path (in a CSV cell, ``;``-separated paths or a JSON list),
    or a list of paths."""
    if value in (None, ""):
        return []
    if in_csv and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: 'subtitles' is not a valid JSON list ({exc.msg})") from exc
    elif isinstance(value, str):
        value = value.split(";") if in_csv else [value]  # a JSONL string is one path, whatever it holds
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: 'subtitles' must be a path or a list of paths, got {json.dumps(value)[:80]}")
    return [v.strip() for v in value if v.strip()]


# --- shards --------------------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) -> (i, n)."""
    try:
        left, right = text.split("/")
        index, count = int(left), int(right)
    except ValueError:
        raise IndexerError(f"--shard {text!r}: expected I/N, e.g. 1/4 for the first of four shards") from None
    if not 1 <= index <= count:
        raise IndexerError(f"--shard {text!r}: expected 1 <= I <= N (shards count from 1)")
    return index, count


def shard_of(path: Path, count: int) -> int:
    """The shard (1..count) a path belongs to: a stable hash of the absolute path, the same on every machine."""
    digest = hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def select_shard(sources: list[Source], index: int, count: int) -> list[Source]:
    return [s for s in sources if shard_of(s.path, count) == index]
