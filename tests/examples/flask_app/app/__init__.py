"""A Flask application factory with Flask-SQLAlchemy 3 and Flask-Migrate."""

import os

from dotenv import load_dotenv
from flask import Flask

from app.extensions import db, migrate


def create_app(test_config: dict | None = None) -> Flask:
    load_dotenv()  # .env, for the settings the environment does not give
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    if test_config:
        app.config.update(test_config)
    db.init_app(app)
    migrate.init_app(app, db)

    from app import routes

    app.register_blueprint(routes.bp)
    return app
