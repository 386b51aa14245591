"""What supabase-js keeps in a browser's storage for a signed-in user.

No Auth server runs on the local stack, so a browser signs in the way supabase-js itself
remembers a sign-in: a session object under its storage key. The local stack's dashboard
page (``tokens demo``) and the browser tests sign users in with it. Development and tests
only: nothing here is served by anything but the local gateway.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit


def storage_key(supabase_url: str) -> str:
    """supabase-js's default storage key for a project URL (``sb-<first label>-auth-token``)."""
    host = urlsplit(supabase_url).hostname or ""
    return f"sb-{host.split('.')[0]}-auth-token"


def browser_session(
    access_token: str,
    *,
    user_id: str,
    email: str,
    expires_in: int,
    full_name: str = "",
) -> dict[str, Any]:
    """A signed-in session as supabase-js stores it; it lasts as long as ``access_token``."""
    now = int(time.time())
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "expires_at": now + expires_in,
        "refresh_token": f"local-{user_id}",
        "user": {
            "id": user_id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": email,
            "app_metadata": {"provider": "email"},
            "user_metadata": {"full_name": full_name},
        },
    }
