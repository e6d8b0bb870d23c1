"""Tags 13 by label."""

from alembic import op

revision = "0033"
down_revision = "0032"


def upgrade():
    op.create_index("ix_tags13_label", "tags13", ["label"])


def downgrade():
    raise NotImplementedError
