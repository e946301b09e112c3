"""Clip thumbnails move into the catalog (``clip_thumbnails``), so every API replica serves every ingester's.

Thumbnail files written before this revision are not imported (a migration cannot know which data
directory holds them, and a shared catalog has several): their clips keep the file's path in
``clips.thumbnail`` and the service serves those files from ``TVR_DATA_DIR/thumbnails`` as before, until
the video is re-indexed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "clip_thumbnails",
        sa.Column("clip_id", Id, nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clip_id"], ["clips.id"], name=op.f("fk_clip_thumbnails_clip_id_clips"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("clip_id", name=op.f("pk_clip_thumbnails")),
    )


def downgrade() -> None:
    op.drop_table("clip_thumbnails")
