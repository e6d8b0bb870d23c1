"""Inactive users."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade():
    op.add_column(
        "users", sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true())
    )


def downgrade():
    raise NotImplementedError
