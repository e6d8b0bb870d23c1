"""Tags 8 by label."""

from alembic import op

revision = "0023"
down_revision = "0022"


def upgrade():
    op.create_index("ix_tags8_label", "tags8", ["label"])


def downgrade():
    raise NotImplementedError
