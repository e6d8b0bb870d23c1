"""Tags 11 by label."""

from alembic import op

revision = "0029"
down_revision = "0028"


def upgrade():
    op.create_index("ix_tags11_label", "tags11", ["label"])


def downgrade():
    raise NotImplementedError
