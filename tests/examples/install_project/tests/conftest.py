from dbtoolkit import seed

from tests.factories import CustomerFactory

seeded_customers = seed(CustomerFactory, 3)
