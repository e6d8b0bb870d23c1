"""Tags 10 by label."""

from alembic import op

revision = "0027"
down_revision = "0026"


def upgrade():
    op.create_index("ix_tags10_label", "tags10", ["label"])


def downgrade():
    raise NotImplementedError
