"""Tags 5 by label."""

from alembic import op

revision = "0017"
down_revision = "0016"


def upgrade():
    op.create_index("ix_tags5_label", "tags5", ["label"])


def downgrade():
    raise NotImplementedError
