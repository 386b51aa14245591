"""tokens-client: Supabase-native AI token metering."""

from __future__ import annotations

__version__ = "0.1.0"
