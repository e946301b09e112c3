"""Subtitles and transcripts: ``text_tracks`` and their timed ``text_segments``, with a full-text index.

The index is each backend's own, so it is made here in SQL (the models do not describe it):

- SQLite: the FTS5 table ``text_segments_fts`` over ``text_segments.text`` (external content: it stores
  only the index; rowid = segment id), kept in step by triggers on ``text_segments``. SQLite runs delete
  triggers for rows deleted by ``ON DELETE CASCADE`` too, so deleting a video or a track empties its part.
  A later migration that rebuilds ``text_segments`` (a batch "move and copy") must create the triggers again.
- PostgreSQL: the stored generated column ``text_segments.tsv`` and its GIN index ``ix_text_segments_tsv``.

Both stem English words: FTS5's ``porter`` tokenizer (on ``unicode61``, diacritics removed), PostgreSQL's
``english`` configuration.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SQLITE_UP = [
    "CREATE VIRTUAL TABLE text_segments_fts USING fts5(text, content='text_segments', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER text_segments_fts_insert AFTER INSERT ON text_segments BEGIN "
    "INSERT INTO text_segments_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER text_segments_fts_delete AFTER DELETE ON text_segments BEGIN "
    "INSERT INTO text_segments_fts(text_segments_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER text_segments_fts_update AFTER UPDATE ON text_segments BEGIN "
    "INSERT INTO text_segments_fts(text_segments_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO text_segments_fts(rowid, text) VALUES (new.id, new.text); END",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS text_segments_fts_update",
    "DROP TRIGGER IF EXISTS text_segments_fts_delete",
    "DROP TRIGGER IF EXISTS text_segments_fts_insert",
    "DROP TABLE IF EXISTS text_segments_fts",
]
POSTGRES_UP = [
    "ALTER TABLE text_segments ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    "CREATE INDEX ix_text_segments_tsv ON text_segments USING gin (tsv)",
]
POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_text_segments_tsv",
    "ALTER TABLE text_segments DROP COLUMN IF EXISTS tsv",
]


def upgrade() -> None:
    op.create_table(
        "text_tracks",
        sa.Column("id", Id, nullable=False),
        sa.Column("video_id", Id, nullable=False),
        sa.Column("source", sa.String(length=4096), nullable=False),
        sa.Column("language", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["video_id"], ["videos.id"], name=op.f("fk_text_tracks_video_id_videos"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_text_tracks")),
        sa.UniqueConstraint("video_id", "source", name="uq_text_tracks_video_id_source"),
    )
    op.create_index(op.f("ix_text_tracks_video_id"), "text_tracks", ["video_id"], unique=False)
    op.create_table(
        "text_segments",
        sa.Column("id", Id, nullable=False),
        sa.Column("video_id", Id, nullable=False),
        sa.Column("track_id", Id, nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["video_id"], ["videos.id"], name=op.f("fk_text_segments_video_id_videos"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["track_id"], ["text_tracks.id"], name=op.f("fk_text_segments_track_id_text_tracks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_text_segments")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_text_segments_video_id"), "text_segments", ["video_id"], unique=False)
    op.create_index(op.f("ix_text_segments_track_id"), "text_segments", ["track_id"], unique=False)
    for statement in _full_text_sql(up=True):
        op.execute(statement)


def downgrade() -> None:
    for statement in _full_text_sql(up=False):
        op.execute(statement)
    op.drop_index(op.f("ix_text_segments_track_id"), table_name="text_segments")
    op.drop_index(op.f("ix_text_segments_video_id"), table_name="text_segments")
    op.drop_table("text_segments")
    op.drop_index(op.f("ix_text_tracks_video_id"), table_name="text_tracks")
    op.drop_table("text_tracks")


def _full_text_sql(*, up: bool) -> list[str]:
    dialect = op.get_context().dialect.name  # also offline (alembic upgrade --sql)
    if dialect == "sqlite":
        return SQLITE_UP if up else SQLITE_DOWN
    if dialect == "postgresql":
        return POSTGRES_UP if up else POSTGRES_DOWN
    raise NotImplementedError(f"the full-text index has no {dialect} form: the catalog is SQLite or PostgreSQL")
