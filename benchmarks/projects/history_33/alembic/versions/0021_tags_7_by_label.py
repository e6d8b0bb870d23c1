"""Tags 7 by label."""

from alembic import op

revision = "0021"
down_revision = "0020"


def upgrade():
    op.create_index("ix_tags7_label", "tags7", ["label"])


def downgrade():
    raise NotImplementedError
