"""factory_boy factories of the sample schema.

They name no session: dbtoolkit binds every factory in the modules listed in the
``dbtoolkit_factories`` setting to the current test's ``db_session``. Values are
realistic (Faker) and reproducible: dbtoolkit reseeds Faker and factory_boy before
every test with a seed derived from the test's node id.
"""

import re
import unicodedata

import factory
from factory.alchemy import SQLAlchemyModelFactory

from dbtoolkit.models import PROJECT_STATUSES, Organization, Project, User


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "x"


class BaseFactory(SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        # Flush after each create so that ids and foreign keys are there at once.
        sqlalchemy_session_persistence = "flush"


class OrganizationFactory(BaseFactory):
    class Meta:
        model = Organization

    class Params:
        company = factory.Faker("company")

    # Faker repeats company names; the sequence number keeps names and slugs unique.
    name = factory.LazyAttributeSequence(lambda o, n: f"{o.company} ({n})")
    slug = factory.LazyAttributeSequence(lambda o, n: f"{_slug(o.company)}-{n}")


class UserFactory(BaseFactory):
    class Meta:
        model = User

    class Params:
        first_name = factory.Faker("first_name")
        last_name = factory.Faker("last_name")
        domain = factory.Faker("free_email_domain")

    name = factory.LazyAttribute(lambda o: f"{o.first_name} {o.last_name}")
    # The sequence number makes every email unique, however many are made.
    email = factory.LazyAttributeSequence(
        lambda o, n: f"{_slug(o.first_name)}.{_slug(o.last_name)}.{n}@{o.domain}"
    )
    active = True
    organization = factory.SubFactory(OrganizationFactory)


class ProjectFactory(BaseFactory):
    class Meta:
        model = Project

    class Params:
        phrase = factory.Faker("catch_phrase")

    title = factory.LazyAttributeSequence(lambda o, n: f"{o.phrase} #{n}")
    status = factory.Faker("random_element", elements=PROJECT_STATUSES)
    owner = factory.SubFactory(UserFactory)
