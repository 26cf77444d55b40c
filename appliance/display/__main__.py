"""`python -m appliance.display [options]`: the display on its own, the same command `scanside display` runs."""

from __future__ import annotations

import argparse
import sys

from appliance.display.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.display")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["display", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
