"""User emails."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.add_column("users", sa.Column("email", sa.String(320), nullable=False))


def downgrade():
    raise NotImplementedError
