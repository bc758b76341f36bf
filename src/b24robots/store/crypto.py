"""Encryption of tokens at rest, and keyed hashes of secrets we only ever compare.

The key comes from `B24R_SECRET_KEY` (any text; stretched with SHA-256) or from a key file created
on first run with mode 0600. Losing the key means re-installing the app on every portal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from b24robots.errors import ConfigError

KEY_FILE = "secret.key"


class Vault:
    def __init__(self, key: bytes) -> None:
        self._raw = hashlib.sha256(key).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(self._raw))

    @classmethod
    def from_settings(cls, secret_key: str | None, data_dir: Path) -> Vault:
        if secret_key:
            return cls(secret_key.encode())
        path = data_dir / KEY_FILE
        if not path.exists():
            if not data_dir.exists():
                data_dir.mkdir(parents=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.urlsafe_b64encode(os.urandom(32)))
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
        return cls(path.read_bytes().strip())

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode() if plain else ""

    def decrypt(self, token: str) -> str:
        if not token:
            return ""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "stored tokens cannot be decrypted with the current key; restore B24R_SECRET_KEY or the key "
                "file, or re-install the app on the portal"
            ) from None

    def digest(self, secret: str) -> str:
        """A keyed hash for secrets that are only compared (application tokens)."""
        return hmac.new(self._raw, secret.encode(), hashlib.sha256).hexdigest()

    def matches(self, secret: str, digest: str) -> bool:
        """Constant-time comparison of `secret` with a stored digest."""
        return bool(digest) and hmac.compare_digest(self.digest(secret), digest)
