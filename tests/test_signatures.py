"""Unit tier (no stack): every public call reads one way only.

After the subject of a call (the feature, or the id the call is about) every argument
is keyword-only, in every client and admin method, and the sync and async twins agree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from tokens_client import (
    AsyncTokens,
    AsyncTokensAdmin,
    AsyncTokensClient,
    Tokens,
    TokensAdmin,
    TokensClient,
)

# What a call may take positionally: its subject, nothing else.
SUBJECTS = {"feature", "organization_id", "reservation_id", "usage_id", "name", "mode"}
CONSTRUCTOR_POSITIONALS = {"url", "public_key", "service_key"}
TWINS = [(TokensClient, AsyncTokensClient), (TokensAdmin, AsyncTokensAdmin), (Tokens, AsyncTokens)]
CLASSES = [cls for pair in TWINS for cls in pair]


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    methods = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name != "__init__":
            continue
        if callable(member):
            methods[name] = member
    return methods


def positionals(function: Callable[..., Any]) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(function).parameters.values()
    return [p.name for p in params if p.kind in kinds and p.name not in ("self", "cls")]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_only_the_subject_is_positional(cls: type) -> None:
    checked = 0
    for name, method in public_methods(cls).items():
        taken = positionals(method)
        if name == "__init__":
            assert set(taken) <= CONSTRUCTOR_POSITIONALS, (cls.__name__, taken)
        elif name in ("from_env", "from_supabase", "for_user"):
            assert len(taken) <= 1, (cls.__name__, name, taken)
        else:
            assert len(taken) <= 1, f"{cls.__name__}.{name}{inspect.signature(method)}"
            assert set(taken) <= SUBJECTS, f"{cls.__name__}.{name}: {taken}"
        for parameter in inspect.signature(method).parameters.values():
            assert parameter.kind is not inspect.Parameter.VAR_POSITIONAL, (cls.__name__, name)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize(("sync", "async_"), TWINS, ids=lambda cls: cls.__name__)
def test_twins_take_the_same_arguments(sync: type, async_: type) -> None:
    sync_methods = public_methods(sync)
    async_methods = public_methods(async_)
    renamed = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__"}
    for name, method in sync_methods.items():
        twin = async_methods.get(renamed.get(name, name))
        assert twin is not None, f"{async_.__name__} lacks {name}"
        left = [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]
        right = [(p.name, p.kind, p.default) for p in inspect.signature(twin).parameters.values()]
        assert left == right, name


def test_deduct_tokens_reads_one_way() -> None:
    signature = inspect.signature(TokensClient.deduct_tokens)
    keyword_only = [
        name for name, p in signature.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert keyword_only == ["quantity", "request_id", "organization_id"]


def test_the_console_script_says_which_extra_is_missing() -> None:
    import subprocess
    import sys

    hidden = (
        "import sys; sys.modules['typer'] = None; from tokens_client.__main__ import main; main()"
    )
    result = subprocess.run([sys.executable, "-c", hidden], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tokens: the command line needs its extra: pip install 'tokens-client[cli]'"
    ]


def test_no_plan_name_is_fixed_in_the_library_or_the_cli() -> None:
    """Plans are rows: the server validates a plan (invalid_plan); code never lists them."""
    from pathlib import Path

    import tokens_client

    package = Path(tokens_client.__file__).parent
    # the demo tells the seed data's story and the fixtures create the seed's plans
    story = {"_demo.py", "testing.py", "_migrations.py"}  # _migrations: the starter *schema*
    for source in sorted(package.glob("*.py")):
        if source.name in story:
            continue
        text = source.read_text()
        for plan in ('"starter"', '"pro"', '"enterprise"'):
            assert plan not in text, f"{source.name} names the plan {plan}"
