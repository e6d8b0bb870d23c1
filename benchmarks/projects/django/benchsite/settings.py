"""pytest-django's side of the comparison: the benchmark's users, on the server run.py starts."""

import os

SECRET_KEY = "benchmark"
INSTALLED_APPS = ["benchapp"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": os.environ["BENCH_DJANGO_PORT"],
        "USER": "postgres",
        "NAME": "bench",
    }
}
