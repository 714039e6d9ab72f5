"""The `wuremote` command: argument parsing and exit codes, nothing else.

Exit codes: 0 success, 1 some hosts not healthy, 2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wuremote", description="Repair Windows Update on remote Windows hosts over WinRM/PSRP.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    lab = commands.add_parser("lab", help="start emulated Windows hosts on loopback (the demo's and the tests' target)")
    from .lab.__main__ import add_arguments  # small module; the lab's heavy parts load only when it runs

    add_arguments(lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "lab":
        from .lab.__main__ import run

        return run(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
