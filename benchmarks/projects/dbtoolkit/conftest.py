from bench_factories import UserFactory

from dbtoolkit import async_seed, seed

seeded_users = seed(UserFactory, 5)
async_seeded_users = async_seed(UserFactory, 5)
