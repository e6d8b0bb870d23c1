"""Create publishers, on a branch of its own.

Revision ID: 0003p
"""

import sqlalchemy as sa
from alembic import op

revision = "0003p"
down_revision = "0002"


def upgrade():
    op.create_table("publishers", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade():
    op.drop_table("publishers")
