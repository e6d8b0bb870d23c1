from bench_factories import UserFactory

from dbtoolkit import async_seed, seed

seeded_users = seed(UserFactory, 5)
async_seeded_users = async_seed(UserFactory, 5)


def pytest_addoption(parser):
    parser.addoption(
        "--without-guard",
        action="store_true",
        help="benchmark only: the guard neither blocks nor names who connects",
    )


def pytest_configure(config):
    if config.getoption("--without-guard"):
        import contextlib

        from dbtoolkit.guard import GUARD

        GUARD.block = lambda boundary, fixes: (None, "")
        GUARD.doing = lambda where: contextlib.nullcontext()
