"""The catalog: SQLAlchemy 2 models of videos, clips (with their embeddings and thumbnails), index versions
and runs.

The catalog is the source of truth: every API replica derives its FAISS index from ``Clip.embedding`` of
indexed videos and serves thumbnails from ``ClipThumbnail``, whichever machine ingested them.
Every schema change goes through an Alembic migration (``indexer/migrations``).

Subtitles and transcripts are ``TextTrack`` rows (one per file or embedded stream) holding timed
``TextSegment`` rows. Their full-text index is made by migration 0006 in each backend's own SQL, outside
these models: on SQLite the FTS5 table ``text_segments_fts`` (external content, kept in step by triggers on
``text_segments``), on PostgreSQL the stored generated column ``text_segments.tsv`` with a GIN index. Both
stem English words ("running" finds "runs"): FTS5's ``porter`` tokenizer, PostgreSQL's ``english``
configuration. ``include_in_autogenerate`` keeps those objects out of Alembic's model comparison.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Constraint names that are the same on every backend, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids everywhere (FAISS ids are int64); on SQLite an INTEGER PRIMARY KEY is already 64-bit.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class VideoStatus(str, enum.Enum):
    pending = "pending"  # known, not (yet) indexed
    indexed = "indexed"  # clips and embeddings committed
    failed = "failed"  # the last attempt failed; ``error`` says why; retried by the next ingest


class RunStatus(str, enum.Enum):
    running = "running"  # also what a killed run leaves behind, until a later run on its host sees it gone
    finished = "finished"
    failed = "failed"
    interrupted = "interrupted"  # killed: marked by the next run on the same host


class Video(Base):
    __tablename__ = "videos"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    path: Mapped[str] = mapped_column(String(4096), unique=True)  # absolute, resolved
    content_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 of the file's bytes
    title: Mapped[str | None] = mapped_column(Text)
    # the named collection the video belongs to (``[a-z0-9][a-z0-9_-]{0,63}``); searches may keep to some
    collection: Mapped[str] = mapped_column(String(64), default="default", server_default="default", index=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)  # from the manifest
    duration: Mapped[float | None] = mapped_column(Float)  # seconds
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    codec: Mapped[str | None] = mapped_column(String(64))
    decoder: Mapped[str | None] = mapped_column(String(32))  # what decoded it: pyav, decord, nvdec
    size: Mapped[int | None] = mapped_column(BigInteger)  # bytes
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)  # lets a rerun skip unchanged files unhashed
    status: Mapped[VideoStatus] = mapped_column(
        Enum(VideoStatus, native_enum=False, length=16, validate_strings=True), default=VideoStatus.pending, index=True
    )
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_id: Mapped[str | None] = mapped_column(String(128))  # encoder that made the embeddings
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    clips: Mapped[list[Clip]] = relationship(
        back_populates="video", cascade="all, delete-orphan", passive_deletes=True, order_by="Clip.position"
    )

    def __repr__(self) -> str:
        return f"Video(id={self.id}, path={self.path!r}, status={self.status.value})"


class Clip(Base):
    """A window of a video: one embedding and one thumbnail. ``Clip.id`` is the FAISS id."""

    __tablename__ = "clips"
    __table_args__ = (
        UniqueConstraint("video_id", "position", name="uq_clips_video_id_position"),
        {"sqlite_autoincrement": True},  # never reuse a deleted clip's id: an old index may still name it
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0, 1, ... in time order
    start: Mapped[float] = mapped_column(Float)  # seconds
    end: Mapped[float] = mapped_column(Float)
    # Legacy (catalogs written before revision 0004): a JPEG file relative to Settings.thumbnails_dir.
    # Newer clips keep their JPEG in ClipThumbnail and leave this empty.
    thumbnail: Mapped[str | None] = mapped_column(String(512))
    embedding: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # float32, L2-normalised, dim values

    video: Mapped[Video] = relationship(back_populates="clips")

    def vector(self) -> np.ndarray:
        return np.frombuffer(self.embedding, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Clip(id={self.id}, video_id={self.video_id}, {self.start:.2f}-{self.end:.2f}s)"


class ClipThumbnail(Base):
    """A clip's JPEG thumbnail (5-10 KB), in a table of its own so that scans of ``clips`` stay lean.
    Written with the clip in one transaction; deleted with it (``ON DELETE CASCADE``)."""

    __tablename__ = "clip_thumbnails"

    clip_id: Mapped[int] = mapped_column(Id, ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)


class IndexVersion(Base):
    """A published FAISS index: what made it and where it lies (relative to the data directory)."""

    __tablename__ = "index_versions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, index=True)
    checkpoint_id: Mapped[str] = mapped_column(String(128))
    factory: Mapped[str] = mapped_column(String(256))
    vector_count: Mapped[int] = mapped_column(BigInteger)
    dim: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(4096))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IngestionRun(Base):
    """One ``tvr ingest`` invocation: its arguments and what it did. A killed run stays ``running`` until the
    next run on the same host finds its process gone and marks it ``interrupted``."""

    __tablename__ = "ingestion_runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[RunStatus] = mapped_column(
        Enum(RunStatus, native_enum=False, length=16, validate_strings=True), default=RunStatus.running
    )
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    checkpoint_id: Mapped[str | None] = mapped_column(String(128))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    discovered: Mapped[int] = mapped_column(Integer, default=0)
    ignored: Mapped[int] = mapped_column(Integer, default=0)
    indexed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    clips: Mapped[int] = mapped_column(Integer, default=0)


class TextTrack(Base):
    """One subtitle or transcript: a file (its absolute path) or a text stream embedded in the video
    (``stream:N``). A track that could not be read has status ``failed``, its ``error`` and no segments."""

    __tablename__ = "text_tracks"
    __table_args__ = (UniqueConstraint("video_id", "source", name="uq_text_tracks_video_id_source"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(4096))  # the file's absolute path, or "stream:N"
    language: Mapped[str | None] = mapped_column(String(32))  # "en", "pt-BR": the file name's or the stream's
    status: Mapped[str] = mapped_column(String(16))  # "ok" or "failed"
    error: Mapped[str | None] = mapped_column(Text)  # why it could not be read (names the file)
    # sha256 of the file's bytes; for an embedded stream the video's content hash
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    segments: Mapped[int] = mapped_column(Integer, default=0)  # how many TextSegment rows it has
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __repr__(self) -> str:
        return f"TextTrack(id={self.id}, video_id={self.video_id}, {self.source!r}, {self.status})"


class TextSegment(Base):
    """A cue of a track: its time span and its plain text (markup removed), which the full-text index
    covers (see the module's docstring). Written with its track in one transaction."""

    __tablename__ = "text_segments"
    __table_args__ = {"sqlite_autoincrement": True}  # FTS5 rowids: never reuse a deleted segment's id

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("text_tracks.id", ondelete="CASCADE"), index=True)
    start: Mapped[float] = mapped_column(Float)  # seconds
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"TextSegment(id={self.id}, track_id={self.track_id}, {self.start:.2f}-{self.end:.2f}s)"


# What migration 0006 makes by hand for full-text search, which the models do not describe.
FULL_TEXT_TABLE = "text_segments_fts"  # SQLite FTS5 (and its shadow tables, text_segments_fts_*)
FULL_TEXT_COLUMN = "tsv"  # PostgreSQL: text_segments.tsv
FULL_TEXT_INDEX = "ix_text_segments_tsv"  # PostgreSQL: GIN index of text_segments.tsv


def include_in_autogenerate(name: str | None, type_: str, parent_names: Mapping[Any, str | None]) -> bool:
    """Alembic's ``include_name`` hook: leave the full-text objects of migration 0006 out of the comparison
    of the models with the database (``alembic check``)."""
    if name is None:
        return True
    if type_ == "table":
        return name != FULL_TEXT_TABLE and not name.startswith(FULL_TEXT_TABLE + "_")
    if type_ == "column":
        return not (name == FULL_TEXT_COLUMN and parent_names.get("table_name") == "text_segments")
    if type_ == "index":
        return name != FULL_TEXT_INDEX
    return True
