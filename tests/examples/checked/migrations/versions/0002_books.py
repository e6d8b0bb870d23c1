"""Create books, each in a format, and a function that counts them.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"

BOOK_FORMAT = postgresql.ENUM("paper", "ebook", name="book_format", create_type=False)


def upgrade():
    BOOK_FORMAT.create(op.get_bind())
    op.create_table(
        "books",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("author_id", sa.Integer(), sa.ForeignKey("authors.id"), nullable=False),
        sa.Column("format", BOOK_FORMAT, server_default="paper", nullable=False),
    )
    op.execute(
        "CREATE FUNCTION book_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM books'"
    )


def downgrade():
    op.execute("DROP FUNCTION book_count()")
    op.drop_table("books")
    BOOK_FORMAT.drop(op.get_bind())
