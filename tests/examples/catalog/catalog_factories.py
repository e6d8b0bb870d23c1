import factory
from catalog_models import Author, Book
from factory.alchemy import SQLAlchemyModelFactory


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
