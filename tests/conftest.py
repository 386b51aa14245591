from __future__ import annotations

pytest_plugins = ["tokens_client.testing"]
