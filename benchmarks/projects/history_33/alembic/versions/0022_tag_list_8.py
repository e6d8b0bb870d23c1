"""Tag list 8."""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"


def upgrade():
    op.create_table(
        "tags8", sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.String(50))
    )


def downgrade():
    raise NotImplementedError
