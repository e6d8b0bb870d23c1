"""Create authors.

Revision ID: 0001
"""

import pathlib

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    # Counts the runs of this upgrade, for the tests of what the checks skip.
    log = pathlib.Path(__file__).parents[2] / "upgrades.log"
    log.write_text((log.read_text() if log.exists() else "") + "0001\n")
    op.create_table(
        "authors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
    )


def downgrade():
    op.drop_table("authors")
