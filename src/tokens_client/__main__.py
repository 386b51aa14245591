"""``tokens`` and ``python -m tokens_client``: the command line, when its extra is there."""

from __future__ import annotations

import sys

CLI_MODULES = {"typer", "rich", "click"}
HINT = "tokens: the command line needs its extra: pip install 'tokens-client[cli]'\n"


def main() -> None:
    """Run the CLI; without typer/rich, one line saying what to install (exit 2)."""
    try:
        from tokens_client.cli import main as cli_main
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in CLI_MODULES:
            raise
        sys.stderr.write(HINT)
        sys.exit(2)
    cli_main()


if __name__ == "__main__":
    main()
