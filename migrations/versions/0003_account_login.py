"""account login: encrypted api secret, optional access token, token expiry

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('accounts', sa.Column('api_secret_encrypted', sa.Text(), nullable=True))
    op.add_column('accounts', sa.Column('token_expires_at', sa.DateTime(timezone=True),
                                        nullable=True))
    op.alter_column('accounts', 'access_token', existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE accounts SET access_token = '' WHERE access_token IS NULL")
    op.alter_column('accounts', 'access_token', existing_type=sa.Text(), nullable=False)
    op.drop_column('accounts', 'token_expires_at')
    op.drop_column('accounts', 'api_secret_encrypted')
