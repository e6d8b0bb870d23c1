"""Posts by user."""

from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade():
    op.create_index("ix_posts_user_id", "posts", ["user_id"])


def downgrade():
    raise NotImplementedError
