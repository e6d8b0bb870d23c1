"""Tag list 12."""

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"


def upgrade():
    op.create_table(
        "tags12", sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.String(50))
    )


def downgrade():
    raise NotImplementedError
