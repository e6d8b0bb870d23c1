"""Tags 12 by label."""

from alembic import op

revision = "0031"
down_revision = "0030"


def upgrade():
    op.create_index("ix_tags12_label", "tags12", ["label"])


def downgrade():
    raise NotImplementedError
