"""holder lease, holder registry, subscription transition count

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
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
    op.create_table('holder_lease',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('holder_id', sa.Text(), nullable=False),
    sa.Column('epoch', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_holder_lease'))
    )
    # Counts a row's status transitions: with the generation it derives each event's id.
    op.add_column('subscriptions', sa.Column('transitions', sa.BigInteger(), server_default='0', nullable=False))
    op.create_table('holders',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('host', sa.Text(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('role', sa.Text(), server_default='standby', nullable=False),
    sa.Column('epoch', sa.BigInteger(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holders'))
    )


def downgrade() -> None:
    op.drop_table('holders')
    op.drop_column('subscriptions', 'transitions')
    op.drop_table('holder_lease')
