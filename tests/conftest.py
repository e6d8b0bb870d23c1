from dbtoolkit import seed
from factories import UserFactory

pytest_plugins = ["pytester"]

seeded_users = seed(UserFactory, 5)
