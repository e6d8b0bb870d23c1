"""Give authors an email address.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade():
    op.add_column("authors", sa.Column("email", sa.String(320), nullable=True))


def downgrade():
    raise NotImplementedError("emails, once given, are kept")
