"""Password hashing and access tokens, with the standard library."""

import base64
import hashlib
import hmac
import os

from app.core.config import settings


def get_password_hash(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 200_000)
    return base64.b64encode(salt + digest).decode()


def verify_password(password: str, hashed: str) -> bool:
    raw = base64.b64decode(hashed)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), raw[:16], 200_000)
    return hmac.compare_digest(digest, raw[16:])


def create_access_token(subject: str) -> str:
    signature = hmac.new(settings.SECRET_KEY.encode(), subject.encode(), "sha256").hexdigest()
    return f"{subject}.{signature}"


def read_access_token(token: str) -> str | None:
    subject, _, signature = token.rpartition(".")
    expected = hmac.new(settings.SECRET_KEY.encode(), subject.encode(), "sha256").hexdigest()
    return subject if hmac.compare_digest(signature, expected) else None
