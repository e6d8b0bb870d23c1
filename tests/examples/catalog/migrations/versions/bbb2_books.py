"""Create books, written by authors.

Revision ID: bbb2
"""

import sqlalchemy as sa
from alembic import op

revision = "bbb2"
down_revision = "aaa1"


def upgrade():
    op.create_table(
        "books",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("author_id", sa.Integer(), sa.ForeignKey("authors.id"), nullable=False),
    )
