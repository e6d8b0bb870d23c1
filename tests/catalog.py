"""A small project of its own (``catalog``: authors and their books) for pytester runs.

It is configured only through dbtoolkit's ini settings, which also shows that the
plugin works with any schema. Every inner run is a subprocess: factories bound and
SQLAlchemy registries filled by one run must not leak into the next.
"""

from __future__ import annotations

import re
import textwrap

import pytest

CATALOG_MODELS = """
    from sqlalchemy import ForeignKey, String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


    class Base(DeclarativeBase):
        pass


    class Author(Base):
        __tablename__ = "authors"

        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(200), unique=True)


    class Book(Base):
        __tablename__ = "books"

        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(200))
        author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
        author: Mapped[Author] = relationship()
"""

CATALOG_FACTORIES = """
    import factory
    from factory.alchemy import SQLAlchemyModelFactory

    from catalog_models import Author, Book


    class AuthorFactory(SQLAlchemyModelFactory):
        class Meta:
            model = Author
            sqlalchemy_session_persistence = "flush"

        class Params:
            person = factory.Faker("name")

        # The sequence number keeps names unique however often Faker repeats one.
        name = factory.LazyAttributeSequence(lambda o, n: f"{o.person} {n}")


    class BookFactory(SQLAlchemyModelFactory):
        class Meta:
            model = Book
            sqlalchemy_session_persistence = "flush"

        title = factory.Faker("sentence", nb_words=3)
        author = factory.SubFactory(AuthorFactory)
"""

CATALOG_CONFTEST = """
    from catalog_factories import AuthorFactory, BookFactory
    from dbtoolkit import seed

    seeded_authors = seed(AuthorFactory, 3)
    seeded_books = seed(BookFactory, 2)
"""

ALEMBIC_INI = """
    [alembic]
    script_location = %(here)s/migrations
    path_separator = os
    sqlalchemy.url = postgresql+psycopg2://nobody@localhost/not_used_dbtoolkit_sets_it
"""

ALEMBIC_ENV = """
    from sqlalchemy import create_engine, pool

    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
"""

REVISION_AUTHORS = """
    '''Create authors.

    Revision ID: aaa1
    '''
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
"""

REVISION_BOOKS = """
    '''Create books, written by authors.

    Revision ID: bbb2
    '''
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
        {extra}
"""

# The ini lines with which a project points dbtoolkit at its schema and factories.
CATALOG_SETTINGS = """\
dbtoolkit_alembic_ini = alembic.ini
dbtoolkit_factories = catalog_factories
"""


def catalog_project(
    pytester: pytest.Pytester, settings: str = CATALOG_SETTINGS, second_revision: str = ""
) -> None:
    """Write the catalog project: ini, migrations, models, factories and seed fixtures.

    ``settings`` are the dbtoolkit lines of the ini; ``second_revision`` is one
    statement run at the end of revision bbb2's upgrade.
    """
    ini = "[pytest]\npythonpath = .\nfilterwarnings = error\n"
    if "asyncio_default_fixture_loop_scope" not in settings:
        # pytest-asyncio (dbtoolkit's async extra) warns without it, an error here.
        ini += "asyncio_default_fixture_loop_scope = function\n"
    pytester.makeini(ini + textwrap.dedent(settings))
    pytester.makefile(".ini", alembic=ALEMBIC_INI)
    pytester.makepyfile(
        catalog_models=CATALOG_MODELS,
        catalog_factories=CATALOG_FACTORIES,
        conftest=CATALOG_CONFTEST,
        **{
            "migrations/env": ALEMBIC_ENV,
            "migrations/versions/aaa1_authors": REVISION_AUTHORS,
            "migrations/versions/bbb2_books": REVISION_BOOKS.replace("{extra}", second_revision),
        },
    )


def run(pytester: pytest.Pytester, *args: str, randomly: bool = False) -> pytest.RunResult:
    """Run pytest on the inner project in a subprocess, in file order unless ``randomly``."""
    if not randomly:
        args = ("-p", "no:randomly", *args)
    return pytester.runpytest_subprocess(*args, timeout=180)


def sep_line(result: pytest.RunResult, title: str) -> str:
    """Return the output line that is ``title`` between separator characters."""
    pattern = re.compile(rf"^[=_-]+ {re.escape(title)} [=_-]+$")
    matches = [line for line in result.outlines if pattern.match(line)]
    assert matches, f"no {title!r} line in the output"
    return matches[0]
