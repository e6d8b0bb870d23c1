"""Tags 1 by label."""

from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade():
    op.create_index("ix_tags1_label", "tags1", ["label"])


def downgrade():
    raise NotImplementedError
