"""Tags 3 by label."""

from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade():
    op.create_index("ix_tags3_label", "tags3", ["label"])


def downgrade():
    raise NotImplementedError
