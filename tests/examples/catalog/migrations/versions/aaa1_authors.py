"""Create authors.

Revision ID: aaa1
"""

import sqlalchemy as sa
from alembic import op

revision = "aaa1"
down_revision = None


def upgrade():
    op.create_table(
        "authors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
    )
