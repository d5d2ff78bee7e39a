"""The README's examples stay true: its GraphQL validates against the served schema, and the
commands it shows exist."""

from __future__ import annotations

import re
from pathlib import Path

from graphql import build_schema, parse, validate

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_graphql_examples_validate_against_the_schema() -> None:
    schema = build_schema((ROOT / "schema" / "registry.graphql").read_text())
    blocks = re.findall(r"```graphql\n(.*?)```", README, flags=re.S)
    assert blocks, "the README shows no GraphQL example"
    for block in blocks:
        errors = validate(schema, parse(block))
        assert not errors, [e.message for e in errors]


def test_readme_commands_exist() -> None:
    from typer.main import get_command

    from circuitreg.cli import app

    commands = set(getattr(get_command(app), "commands", {}))
    shown = set(re.findall(r"^circuitreg ([a-z-]+)", README, flags=re.M))
    assert shown, "the README shows no circuitreg command"
    assert shown <= commands, shown - commands
