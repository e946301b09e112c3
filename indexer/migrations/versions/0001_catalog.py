"""The catalog: videos, clips with embeddings, index versions, ingestion runs.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
VIDEO_STATUS = sa.Enum("pending", "indexed", "failed", name="videostatus", native_enum=False, length=16)
RUN_STATUS = sa.Enum("running", "finished", "failed", name="runstatus", native_enum=False, length=16)


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("id", Id, nullable=False),
        sa.Column("path", sa.String(length=4096), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("codec", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=True),
        sa.Column("status", VIDEO_STATUS, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_videos")),
        sa.UniqueConstraint("path", name=op.f("uq_videos_path")),
    )
    op.create_index(op.f("ix_videos_status"), "videos", ["status"], unique=False)

    op.create_table(
        "clips",
        sa.Column("id", Id, nullable=False),
        sa.Column("video_id", Id, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("thumbnail", sa.String(length=512), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["video_id"], ["videos.id"], name=op.f("fk_clips_video_id_videos"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clips")),
        sa.UniqueConstraint("video_id", "position", name="uq_clips_video_id_position"),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_clips_video_id"), "clips", ["video_id"], unique=False)

    op.create_table(
        "index_versions",
        sa.Column("id", Id, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=128), nullable=False),
        sa.Column("factory", sa.String(length=256), nullable=False),
        sa.Column("vector_count", sa.BigInteger(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=4096), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_index_versions")),
    )
    op.create_index(op.f("ix_index_versions_version"), "index_versions", ["version"], unique=False)

    op.create_table(
        "ingestion_runs",
        sa.Column("id", Id, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", RUN_STATUS, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("checkpoint_id", sa.String(length=128), nullable=True),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("discovered", sa.Integer(), nullable=False),
        sa.Column("ignored", sa.Integer(), nullable=False),
        sa.Column("indexed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("clips", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestion_runs")),
    )


def downgrade() -> None:
    op.drop_table("ingestion_runs")
    op.drop_index(op.f("ix_index_versions_version"), table_name="index_versions")
    op.drop_table("index_versions")
    op.drop_index(op.f("ix_clips_video_id"), table_name="clips")
    op.drop_table("clips")
    op.drop_index(op.f("ix_videos_status"), table_name="videos")
    op.drop_table("videos")
