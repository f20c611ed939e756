#!/usr/bin/env python3
"""The versions the tests ran with: prints those installed here next to docs/tested-versions.md's
table, the one place the docs name them, and says which differ.

    python scripts/tested_versions.py          # print (what .ci/run does before the tests)
    python scripts/tested_versions.py --write  # after a passing CI run: make the table these

Never fails on a difference: CI installs what PyPI serves on the day, and a new release is news to
record once the tests have passed with it, not a failure.
"""

import argparse
import platform
import re
import sys
from datetime import date
from importlib import metadata
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "tested-versions.md"
# What the package and its tests import, as pip names them.
PACKAGES = ["torch", "triton", "transformers", "accelerate", "peft", "open_clip_torch", "numpy"]
ROW = re.compile(r"^\| `([^`]+)` \| ([^ |]+) \|$", re.M)


def installed() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not-installed"
    return versions


def recorded(text: str) -> dict[str, str]:
    return dict(ROW.findall(text))


def table(versions: dict[str, str]) -> str:
    return "\n".join(
        ["| package | version |", "|---|---|", *(f"| `{k}` | {v} |" for k, v in versions.items())]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the doc's table and date with these")
    args = parser.parse_args(argv)
    now, text = installed(), DOC.read_text()
    if args.write:
        start, end = (
            text.index("| package | version |"),
            text.index("\n\n", text.index("| package | version |")),
        )
        text = text[:start] + table(now) + text[end:]
        text = re.sub(r"^Last recorded: .*$", f"Last recorded: {date.today().isoformat()}.", text, flags=re.M)
        DOC.write_text(text)
    docs = recorded(text)
    print(f"installed versions ({DOC.relative_to(DOC.parents[1])} records the tested ones):")
    for name, version in now.items():
        note = "" if docs.get(name) == version else f"   <- {DOC.name} says {docs.get(name, 'nothing')}"
        print(f"  {name:16} {version}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
