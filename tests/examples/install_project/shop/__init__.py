"""The application under test: customers place orders."""
