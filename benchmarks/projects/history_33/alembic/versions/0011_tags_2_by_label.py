"""Tags 2 by label."""

from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade():
    op.create_index("ix_tags2_label", "tags2", ["label"])


def downgrade():
    raise NotImplementedError
