"""The README is a user quickstart (issue 21, point 5): short, and `make run` / `make test`, the
contract, are its first commands. Long prose lives in docs/."""

import re

from tests.conftest import ROOT

README = ROOT / "README.md"


def test_the_readme_stays_a_quickstart():
    size = len(README.read_bytes())
    assert size <= 15_000, f"README.md is {size} bytes; move long sections into docs/<topic>.md"


def test_the_first_commands_are_the_contract():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make run", "make test"]
