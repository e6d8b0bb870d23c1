"""The sample factories make realistic, related, unique and reproducible rows.

The constraint tests also prove that the migrated database, not just the ORM,
enforces the schema: the ORM does not check constraints itself, so an IntegrityError
naming the constraint can only come from Postgres.
"""

import re
from pathlib import Path

import forkserver
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError

from dbtoolkit import seeding
from dbtoolkit.models import PROJECT_STATUSES, Organization, Project, User
from factories import OrganizationFactory, ProjectFactory, UserFactory

REPO = Path(__file__).resolve().parents[1]
ALL_FACTORIES = (OrganizationFactory, UserFactory, ProjectFactory)

# Two or more capitalised words separated by single spaces, e.g. "Mary Ann O'Neil-Smith".
NAME = re.compile(r"[A-Z][A-Za-z'-]*(?: [A-Z][A-Za-z'-]*)+")
# Lowercase dot-atoms on both sides, a domain of at least two labels, a letters-only TLD.
EMAIL = re.compile(
    r"(?P<local>[a-z0-9]+(?:[._+-][a-z0-9]+)*)"
    r"@(?P<domain>(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,})"
)
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def constraint_of(excinfo: pytest.ExceptionInfo[IntegrityError]) -> str:
    return excinfo.value.orig.diag.constraint_name


def values_after_reseed(seed: int, n: int = 5) -> list[tuple[str, ...]]:
    """What the plugin does before a test (reseed, restart sequences), then build users."""
    seeding.reseed(seed)
    for factory_class in ALL_FACTORIES:
        factory_class.reset_sequence(force=True)
    return [
        (user.name, user.email, user.organization.name, user.organization.slug)
        for user in UserFactory.build_batch(n)
    ]


# Realism.
def test_users_have_a_first_and_last_name_and_a_valid_lowercase_email():
    users = UserFactory.build_batch(1000)
    for user in users:
        assert NAME.fullmatch(user.name), user.name
        assert user.email == user.email.strip().lower(), user.email
        assert " " not in user.email
        match = EMAIL.fullmatch(user.email)
        assert match, user.email
        assert len(match["local"]) <= 64
        assert len(user.email) <= 320
        assert user.active is True
    # Realistic means varied: Faker, not a constant.
    assert len({user.name for user in users}) > 500
    assert len({user.email.partition("@")[2] for user in users}) > 1


def test_organizations_have_a_name_and_a_lowercase_hyphenated_slug():
    for organization in OrganizationFactory.build_batch(500):
        assert organization.name.strip()
        assert SLUG.fullmatch(organization.slug), organization.slug


# Relations.
def test_user_factory_creates_the_users_organization_in_the_database(db_session):
    user = UserFactory.create()

    assert isinstance(user.organization, Organization)
    assert user.id is not None
    assert user.organization.id is not None
    assert user.organization_id == user.organization.id
    row = db_session.execute(
        text(
            "SELECT o.name FROM users u JOIN organizations o ON o.id = u.organization_id "
            "WHERE u.email = :email"
        ),
        {"email": user.email},
    ).one()
    assert row.name == user.organization.name


def test_project_factory_creates_an_owner_and_a_valid_status(db_session):
    projects = ProjectFactory.create_batch(30)

    for project in projects:
        assert isinstance(project.owner, User)
        assert project.owner.id is not None
        assert project.owner_id == project.owner.id
        assert project.owner.organization_id is not None
        assert project.status in PROJECT_STATUSES
        assert project.title.strip()
    assert len({project.status for project in projects}) > 1
    joined = db_session.scalar(
        text(
            "SELECT count(*) FROM projects p JOIN users u ON u.id = p.owner_id "
            "JOIN organizations o ON o.id = u.organization_id"
        )
    )
    assert joined == 30


# Uniqueness.
def test_ten_thousand_built_users_have_distinct_emails():
    users = UserFactory.build_batch(10_000)

    assert len({user.email for user in users}) == 10_000
    assert len({user.organization.name for user in users}) == 10_000
    assert len({user.organization.slug for user in users}) == 10_000


def test_two_hundred_users_are_created_next_to_the_seed_without_integrity_error(
    db_session, seeded_users
):
    UserFactory.create_batch(200)
    db_session.commit()

    assert count(db_session, User) == 205
    assert count(db_session, Organization) == 205


def test_project_titles_are_unique_per_owner_in_the_database(db_session):
    owner, other = UserFactory.create_batch(2)
    ProjectFactory.create(owner=owner, title="Roadmap")
    ProjectFactory.create(owner=other, title="Roadmap")  # another owner may reuse it
    db_session.commit()

    with pytest.raises(IntegrityError) as excinfo:
        ProjectFactory.create(owner=owner, title="Roadmap")
    assert constraint_of(excinfo) == "uq_projects_owner_title"
    db_session.rollback()
    assert count(db_session, Project) == 2


@pytest.mark.parametrize("status", ["deleted", "Active", ""])
def test_project_status_outside_the_list_is_refused_by_the_database(db_session, status):
    with pytest.raises(IntegrityError) as excinfo:
        ProjectFactory.create(status=status)
    assert constraint_of(excinfo) == "ck_projects_status"


def test_every_listed_project_status_is_accepted_by_the_database(db_session):
    for status in PROJECT_STATUSES:
        ProjectFactory.create(status=status)
    db_session.commit()
    assert set(db_session.scalars(select(Project.status))) == set(PROJECT_STATUSES)


@pytest.mark.parametrize(
    ("column", "constraint"),
    [
        ("email", "users_email_key"),
        ("organization.name", "organizations_name_key"),
        ("organization.slug", "organizations_slug_key"),
    ],
)
def test_user_and_organization_uniques_are_enforced_by_the_database(
    db_session, seeded_users, column, constraint
):
    taken = seeded_users[0]
    if column == "email":
        duplicate = {"email": taken.email}
    else:
        field = column.split(".")[1]
        duplicate = {f"organization__{field}": getattr(taken.organization, field)}

    with pytest.raises(IntegrityError) as excinfo:
        UserFactory.create(**duplicate)
    assert constraint_of(excinfo) == constraint


# Determinism.
def test_same_seed_gives_the_same_values():
    seed = seeding.seed_for(0, "tests/test_example.py::test_example")

    assert seed == seeding.seed_for(0, "tests/test_example.py::test_example")
    assert 0 <= seed < 2**32
    assert values_after_reseed(seed) == values_after_reseed(seed)


def test_different_node_ids_and_base_seeds_give_different_values():
    by_node = seeding.seed_for(0, "tests/test_example.py::test_one")
    other_node = seeding.seed_for(0, "tests/test_example.py::test_two")
    other_base = seeding.seed_for(1, "tests/test_example.py::test_one")

    assert len({by_node, other_node, other_base}) == 3
    reference = values_after_reseed(by_node)
    assert values_after_reseed(other_node) != reference
    assert values_after_reseed(other_base) != reference


@pytest.fixture
def built_during_setup(db_session):
    # Setup runs after the plugin's autouse reseed and db_session's sequence restart.
    return [
        (user.name, user.email, user.organization.name, user.organization.slug)
        for user in UserFactory.build_batch(5)
    ]


def test_plugin_seeds_each_test_from_its_node_id(built_during_setup, dbtoolkit_settings, request):
    seed = seeding.seed_for(dbtoolkit_settings.seed, request.node.nodeid)
    assert built_during_setup == values_after_reseed(seed)


INNER_TESTS = """
from factories import UserFactory


def test_one(db_session):
    print("\\n@@ one", [(u.name, u.email) for u in UserFactory.create_batch(3)])


def test_two(db_session, seeded_users):
    print("\\n@@ two", [(u.name, u.email) for u in seeded_users + [UserFactory.create()]])
"""


@pytest.fixture
def inner_project(pytester, monkeypatch, inner_cache):
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    for name in ("DBTOOLKIT_SEED", "DBTOOLKIT_FACTORIES", "DBTOOLKIT_ALEMBIC_INI"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini(
        "[pytest]\n"
        f"dbtoolkit_alembic_ini = {REPO / 'alembic.ini'}\n"
        "dbtoolkit_factories = factories\n"
        f"pythonpath = {REPO}\n"
        f"cache_dir = {inner_cache / 'sample'}\n"  # migrated once for all the runs
    )
    pytester.makeconftest(
        "from dbtoolkit import seed\n"
        "from factories import UserFactory\n"
        "seeded_users = seed(UserFactory, 2)\n"
    )
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester


def printed_values(result) -> dict[str, str]:
    result.assert_outcomes(passed=2)
    lines = [line for line in result.outlines if line.startswith("@@ ")]
    values = dict(line[3:].split(" ", 1) for line in lines)
    assert set(values) == {"one", "two"}, result.outlines
    return values


def test_same_test_makes_the_same_data_in_another_run_and_order(inner_project):
    forward = forkserver.runpytest(inner_project, "-p", "no:randomly", "-s")
    reversed_ = forkserver.runpytest(inner_project, "-p", "no:randomly", "--reverse", "-s")

    assert list(printed_values(forward)) == ["one", "two"]
    assert list(printed_values(reversed_)) == ["two", "one"]
    assert printed_values(forward) == printed_values(reversed_)
    assert printed_values(forward)["one"] != printed_values(forward)["two"]


# Known gaps in the promise "the same test makes the same data, whatever the order";
# strict xfails, so they turn into failures once dbtoolkit fixes them.
BUILD_ONLY_TESTS = """
from factories import UserFactory


def test_one():
    UserFactory.build_batch(3)
    print("\\n@@ one", UserFactory.build().email)


def test_two():
    print("\\n@@ two", UserFactory.build().email)
"""


def test_build_only_test_makes_the_same_data_in_either_order(inner_project):
    inner_project.makepyfile(test_inner=BUILD_ONLY_TESTS)
    forward = forkserver.runpytest(inner_project, "-p", "no:randomly", "-s")
    reversed_ = forkserver.runpytest(inner_project, "-p", "no:randomly", "--reverse", "-s")

    assert printed_values(forward) == printed_values(reversed_)


def test_test_body_makes_the_same_data_whatever_the_randomly_seed(inner_project):
    inner_project.makepyfile(
        test_inner=BUILD_ONLY_TESTS.replace("UserFactory.build().email", "UserFactory.build().name")
    )
    first = forkserver.runpytest(inner_project, "-p", "randomly", "--randomly-seed=1", "-s")
    second = forkserver.runpytest(inner_project, "-p", "randomly", "--randomly-seed=2", "-s")

    assert printed_values(first) == printed_values(second)


def test_a_run_inside_this_one_leaves_our_factories_flushed_together(db_session):
    class InnerRunsFactory(OrganizationFactory):  # what an in-process inner run binds
        pass

    seeding.bind([InnerRunsFactory])
    flushes: list[object] = []
    event.listen(db_session, "after_flush", lambda *args: flushes.append(args))

    users = seeding.create_flushed(db_session, UserFactory, 3, {})

    assert len(flushes) == 1  # not one per SubFactory's organization
    assert all(user.organization.id is not None for user in users)
