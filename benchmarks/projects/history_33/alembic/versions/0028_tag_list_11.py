"""Tag list 11."""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"


def upgrade():
    op.create_table(
        "tags11", sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.String(50))
    )


def downgrade():
    raise NotImplementedError
