"""Unique emails."""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade():
    op.create_index("ix_users_email", "users", ["email"], unique=True)


def downgrade():
    raise NotImplementedError
