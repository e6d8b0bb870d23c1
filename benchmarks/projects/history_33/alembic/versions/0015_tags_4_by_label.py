"""Tags 4 by label."""

from alembic import op

revision = "0015"
down_revision = "0014"


def upgrade():
    op.create_index("ix_tags4_label", "tags4", ["label"])


def downgrade():
    raise NotImplementedError
