"""Encryption of stored secrets (VMA tokens, vCenter passwords, CloudStack secret keys).

Secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``). The key
comes from ``OMA_SECRET_KEY``; when that is absent, a key is generated once into
``<OMA_DATA_DIR>/secret.key`` (mode 0600; the directory 0700 when this creates it) with a logged
warning, and reused afterwards. Losing the key makes the stored secrets unreadable: back it up
with the database.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from migration_common import ConfigError, get_logger, register_secret

from .errors import SecretsError

log = get_logger(__name__)
KEY_FILE = "secret.key"


class SecretBox:
    """Encrypts and decrypts short secrets with one Fernet key."""

    def __init__(self, key: str | bytes) -> None:
        raw = key.encode() if isinstance(key, str) else key
        try:
            self._fernet = Fernet(raw)
        except (ValueError, TypeError):
            raise ConfigError(
                "OMA_SECRET_KEY",
                "is not a valid Fernet key (32 url-safe base64-encoded bytes; create one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)",
            ) from None

    def encrypt(self, plaintext: str) -> str:
        """The ciphertext (text) of ``plaintext``; the plaintext is registered for redaction."""
        register_secret(plaintext)
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext of ``ciphertext``; SecretsError when the key does not match."""
        try:
            plaintext = self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise SecretsError(
                "a stored secret cannot be decrypted: OMA_SECRET_KEY differs from the key "
                "it was encrypted with"
            ) from None
        register_secret(plaintext)
        return plaintext


def load_key(secret_key: str | None, data_dir: Path) -> str:
    """The Fernet key: ``secret_key`` if given, else read or create ``data_dir/secret.key``."""
    if secret_key:
        register_secret(secret_key)
        return secret_key
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        key = path.read_text(encoding="ascii").strip()
        register_secret(key)
        return key
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Fernet.generate_key().decode("ascii")
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    try:
        # link() fails if another process created the key first: then use theirs.
        os.link(tmp, path)
    except FileExistsError:
        key = path.read_text(encoding="ascii").strip()
        register_secret(key)
        return key
    finally:
        tmp.unlink(missing_ok=True)
    register_secret(key)
    log.warning(
        "OMA_SECRET_KEY is not set: generated a new key file; back it up with the database",
        path=str(path),
    )
    return key


def secret_box(config: object) -> SecretBox:
    """A SecretBox for an :class:`oma.config.OmaConfig` (creating the key file if needed)."""
    key = load_key(getattr(config, "secret_key", None), Path(config.data_dir))
    return SecretBox(key)
