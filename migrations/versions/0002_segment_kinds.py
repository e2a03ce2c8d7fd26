"""segments: kind (segment | stats | snapshots), superseded_at, index by rank and step range

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('segments', schema=None) as batch_op:
        # Rows written before compaction existed are all plain segments.
        batch_op.add_column(
            sa.Column('kind', sa.String(length=16), server_default='segment', nullable=False)
        )
        batch_op.add_column(sa.Column('superseded_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index('ix_segments_run_steps')
        batch_op.create_index(
            'ix_segments_run_rank_steps', ['run_id', 'rank', 'step_min', 'step_max'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.drop_index('ix_segments_run_rank_steps')
        batch_op.create_index('ix_segments_run_steps', ['run_id', 'step_min'], unique=False)
        batch_op.drop_column('superseded_at')
        batch_op.drop_column('kind')
