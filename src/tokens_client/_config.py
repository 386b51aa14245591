"""Settings from the environment or a ``.env`` file (python-dotenv)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dotenv import load_dotenv

from tokens_client._errors import ConfigurationError


@dataclass(frozen=True)
class Settings:
    """``SUPABASE_URL`` plus the public and secret keys (JWT or ``sb_…`` forms)."""

    url: str
    public_key: str | None
    secret_key: str | None

    @classmethod
    def from_env(cls, dotenv_path: str | None = None) -> Settings:
        """Read the environment, after loading ``.env`` (existing variables win)."""
        load_dotenv(dotenv_path or os.environ.get("TOKENS_DOTENV") or ".env", override=False)
        url = os.environ.get("SUPABASE_URL", "").strip()
        if not url:
            raise ConfigurationError("SUPABASE_URL is not set (environment or .env)")
        public = os.environ.get("SUPABASE_PUBLISHABLE_KEY") or os.environ.get("SUPABASE_ANON_KEY")
        secret = os.environ.get("SUPABASE_SECRET_KEY") or os.environ.get(
            "SUPABASE_SERVICE_ROLE_KEY"
        )
        return cls(url=url.rstrip("/"), public_key=public or None, secret_key=secret or None)

    def require_public_key(self) -> str:
        if not self.public_key:
            raise ConfigurationError(
                "SUPABASE_ANON_KEY (or SUPABASE_PUBLISHABLE_KEY) is not set (environment or .env)"
            )
        return self.public_key

    def require_secret_key(self) -> str:
        if not self.secret_key:
            raise ConfigurationError(
                "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY) is not set (env or .env)"
            )
        return self.secret_key
