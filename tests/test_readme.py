"""The README shows real output: its blocks for deterministic commands match what they print now."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnnlab.apps.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(command: str) -> str:
    """The text printed under ``$ <command>`` in the README's code block."""
    text = README.read_text()
    match = re.search(rf"^\$ {re.escape(command)}\n(.*?)^```", text, flags=re.S | re.M)
    assert match, f"README has no block for `{command}`"
    return match.group(1)


@pytest.mark.parametrize("command", ["cnnlab models", "cnnlab layers lenet5"])
def test_readme_output_is_what_the_command_prints(command):
    result = CliRunner().invoke(cli, command.split()[1:])
    assert result.exit_code == 0, result.output
    assert readme_block(command).strip() == result.output.strip()
