import factory
from factory.alchemy import SQLAlchemyModelFactory

from shop.models import Customer, Order


class CustomerFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Customer
        sqlalchemy_session_persistence = "flush"

    name = factory.Faker("name")
    email = factory.Sequence(lambda n: f"customer{n}@example.com")


class OrderFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Order
        sqlalchemy_session_persistence = "flush"

    customer = factory.SubFactory(CustomerFactory)
    item = factory.Faker("word")
