"""Tag list 4."""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade():
    op.create_table(
        "tags4", sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.String(50))
    )


def downgrade():
    raise NotImplementedError
