"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('api_key', sa.Text(), nullable=False),
    sa.Column('access_token', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('healthy', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('unhealthy_reason', sa.Text(), nullable=True),
    sa.Column('token_updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    sa.UniqueConstraint('api_key', name=op.f('uq_accounts_api_key')),
    sa.UniqueConstraint('name', name=op.f('uq_accounts_name'))
    )
    op.create_table('candles',
    sa.Column('instrument_token', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('interval', sa.Text(), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('open', sa.Double(), nullable=False),
    sa.Column('high', sa.Double(), nullable=False),
    sa.Column('low', sa.Double(), nullable=False),
    sa.Column('close', sa.Double(), nullable=False),
    sa.Column('volume', sa.BigInteger(), nullable=False),
    sa.Column('oi', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('instrument_token', 'interval', 'ts', name=op.f('pk_candles'))
    )
    op.create_table('instruments',
    sa.Column('instrument_token', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('exchange_token', sa.Text(), nullable=False),
    sa.Column('tradingsymbol', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), server_default='', nullable=False),
    sa.Column('last_price', sa.Double(), server_default='0', nullable=False),
    sa.Column('expiry', sa.Date(), nullable=True),
    sa.Column('strike', sa.Double(), server_default='0', nullable=False),
    sa.Column('tick_size', sa.Double(), server_default='0', nullable=False),
    sa.Column('lot_size', sa.Integer(), server_default='0', nullable=False),
    sa.Column('instrument_type', sa.Text(), server_default='', nullable=False),
    sa.Column('segment', sa.Text(), server_default='', nullable=False),
    sa.Column('exchange', sa.Text(), server_default='', nullable=False),
    sa.Column('listed', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('instrument_token', name=op.f('pk_instruments'))
    )
    op.create_index('ix_instruments_exchange_tradingsymbol', 'instruments', ['exchange', 'tradingsymbol'], unique=False)
    op.create_table('outbox',
    sa.Column('seq', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_id'))
    )
    op.create_index('ix_outbox_unpublished', 'outbox', ['seq'], unique=False, postgresql_where=sa.text('published_at IS NULL'))
    op.create_table('subscriptions',
    sa.Column('instrument_token', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('mode', sa.Text(), nullable=False),
    sa.Column('wanted', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('account', sa.Text(), nullable=True),
    sa.Column('connection', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('generation', sa.BigInteger(), server_default='1', nullable=False),
    sa.Column('observed_generation', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_tick_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_tick_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("mode IN ('ltp', 'quote', 'full')", name=op.f('ck_subscriptions_mode')),
    sa.CheckConstraint("status IN ('pending', 'active', 'removed', 'queued', 'failed')", name=op.f('ck_subscriptions_status')),
    sa.ForeignKeyConstraint(['instrument_token'], ['instruments.instrument_token'], name=op.f('fk_subscriptions_instrument_token_instruments')),
    sa.PrimaryKeyConstraint('instrument_token', name=op.f('pk_subscriptions'))
    )
    op.create_index('ix_subscriptions_dirty', 'subscriptions', ['instrument_token'], unique=False, postgresql_where=sa.text('generation <> observed_generation'))
    op.create_index('ix_subscriptions_status', 'subscriptions', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_subscriptions_status', table_name='subscriptions')
    op.drop_index('ix_subscriptions_dirty', table_name='subscriptions', postgresql_where=sa.text('generation <> observed_generation'))
    op.drop_table('subscriptions')
    op.drop_index('ix_outbox_unpublished', table_name='outbox', postgresql_where=sa.text('published_at IS NULL'))
    op.drop_table('outbox')
    op.drop_index('ix_instruments_exchange_tradingsymbol', table_name='instruments')
    op.drop_table('instruments')
    op.drop_table('candles')
    op.drop_table('accounts')
