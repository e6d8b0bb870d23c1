"""Rows in the tables before a revision's upgrade, for the stairway migration check.

Each revision's upgrade, downgrade and second upgrade run with these rows (and no
others) in its tables: a migration that works on empty tables only fails there.
"""

ROWS = {
    # users.active is added NOT NULL: existing users need its server default.
    "0002": {
        "organizations": [{"name": "Acme, Inc."}],
        "users": [{"name": "Ada Lovelace", "email": "ada@example.com"}],
    },
    # Slugs are backfilled from names, then made NOT NULL and unique.
    "0004": {"organizations": [{"name": "Acme, Inc."}, {"name": "Acme Inc"}, {"name": "Яндекс"}]},
    # The owner key is added to organizations that exist.
    "0005": {"organizations": [{"name": "Acme, Inc.", "slug": "acme-inc-1"}]},
}
