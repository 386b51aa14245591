"""The Docker-free local Supabase stack: PostgreSQL 15, PostgREST, a gateway, Deno.

`tokens stack up` is this project's `supabase start` for machines without Docker.
See :mod:`tokens_client.stack._stack` for how each component starts.
"""

from __future__ import annotations

from tokens_client.stack._stack import Stack, StackConfig, StackError, StackStatus, mint_jwt

__all__ = ["Stack", "StackConfig", "StackError", "StackStatus", "mint_jwt"]
