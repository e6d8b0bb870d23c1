"""Tag list 9."""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"


def upgrade():
    op.create_table(
        "tags9", sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.String(50))
    )


def downgrade():
    raise NotImplementedError
