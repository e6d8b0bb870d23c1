from catalog_factories import AuthorFactory, BookFactory

from dbtoolkit import seed

seeded_authors = seed(AuthorFactory, 3)
seeded_books = seed(BookFactory, 2)
