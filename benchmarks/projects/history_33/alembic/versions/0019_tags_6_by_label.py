"""Tags 6 by label."""

from alembic import op

revision = "0019"
down_revision = "0018"


def upgrade():
    op.create_index("ix_tags6_label", "tags6", ["label"])


def downgrade():
    raise NotImplementedError
