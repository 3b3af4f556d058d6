"""Password hashing (argon2id) and random tokens; tokens are stored only as SHA-256 digests."""
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
TOKEN_PREFIX = "plt_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A valid argon2 hash that no password matches: verifying against it when the user does not
# exist costs the same time as a real check, so response times do not reveal usernames.
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
