"""Tags 9 by label."""

from alembic import op

revision = "0025"
down_revision = "0024"


def upgrade():
    op.create_index("ix_tags9_label", "tags9", ["label"])


def downgrade():
    raise NotImplementedError
