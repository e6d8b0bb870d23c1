"""Give every organization a unique slug, derived from its name (data migration).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("organizations", sa.Column("slug", sa.String(200), nullable=True))
    # Lowercase the name, turn every run of other characters into one hyphen, and
    # append the id so that names differing only in punctuation stay unique. A name
    # with no a-z or 0-9 at all (e.g. Cyrillic) becomes 'org-<id>'.
    op.execute(
        """
        UPDATE organizations
        SET slug = coalesce(
                nullif(trim(both '-' from regexp_replace(lower(name), '[^a-z0-9]+', '-', 'g')), ''),
                'org'
            ) || '-' || id
        """
    )
    op.alter_column("organizations", "slug", nullable=False)
    op.create_unique_constraint("organizations_slug_key", "organizations", ["slug"])


def downgrade() -> None:
    op.drop_constraint("organizations_slug_key", "organizations", type_="unique")
    op.drop_column("organizations", "slug")
