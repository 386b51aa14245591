from __future__ import annotations

from tokens_client.cli import main

main()
