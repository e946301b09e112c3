"""Every video belongs to one named collection (``videos.collection``); existing videos go to ``default``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("collection", sa.String(64), nullable=False, server_default="default"))
        batch.create_index(op.f("ix_videos_collection"), ["collection"])


def downgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.drop_index(op.f("ix_videos_collection"))
        batch.drop_column("collection")
