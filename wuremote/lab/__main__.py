"""`python -m wuremote.lab` (also `wuremote lab`): run emulated hosts in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

# What the lab extra (`pip install 'wuremote[lab]'`) brings: the controller runs without them.
EXTRA_MODULES = ("psrpcore", "trustme", "spnego")
INSTALL_HINT = "pip install 'wuremote[lab]'"


def missing_extra() -> str | None:
    """One line naming the fix when the lab's own dependencies are not installed, else None."""
    from importlib.util import find_spec

    missing = [name for name in EXTRA_MODULES if find_spec(name) is None]
    if not missing:
        return None
    return f"the lab is not installed (no module {', '.join(missing)}); install it with: {INSTALL_HINT}"


def build_parser(prog: str = "python -m wuremote.lab") -> argparse.ArgumentParser:
    from .scenarios import BUILTIN

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Start emulated Windows hosts on loopback that answer WinRM (WinRS and PSRP) like real ones.",
        epilog="Built-in scenarios: mixed (one host per scenario, cycled), " + ", ".join(BUILTIN),
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hosts", type=int, default=None, help="how many hosts (default: 1, or as the scenario file says)")
    parser.add_argument("--scenario", default="mixed", help="a built-in scenario name or a scenario TOML file (default: mixed)")
    parser.add_argument("--time-scale", type=float, default=0.02,
                        help="real seconds per modelled second (default 0.02: a 20-minute DISM takes 24 s)")
    parser.add_argument("--state-file", type=Path, default=Path("lab-state.json"),
                        help="where to write hosts, ports and credentials once all listen (default: lab-state.json); "
                             "an inventory is written beside it")
    parser.add_argument("--port", type=int, default=None,
                        help="listen from this port upwards, one per host (default: free ports chosen by the system)")
    parser.add_argument("--http", action="store_true",
                        help="plain HTTP instead of HTTPS, with Basic allowed (AllowUnencrypted); NTLM works either way")
    parser.add_argument("--sealed-only", action="store_true",
                        help="with --http: refuse clear bodies (AllowUnencrypted=false), so only NTLM with message "
                             "encryption gets in, as on a default Windows host")
    parser.add_argument("--seed", type=int, default=0, help="seed for everything random in the lab (default 0)")


def run(args: argparse.Namespace) -> int:
    problem = missing_extra()
    if problem:
        print(f"wuremote lab: {problem}", file=sys.stderr)
        return 2
    from .lab import Lab, LabError
    from .scenarios import ScenarioError

    if args.hosts is not None and args.hosts < 1:
        print(f"wuremote lab: --hosts must be at least 1, got {args.hosts}", file=sys.stderr)
        return 2
    if args.sealed_only and not args.http:
        print("wuremote lab: --sealed-only goes with --http (over HTTPS, TLS already encrypts)", file=sys.stderr)
        return 2
    try:
        args.state_file.resolve().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"wuremote lab: cannot create the folder of --state-file {args.state_file} ({exc.strerror}); "
              "choose a writable path", file=sys.stderr)
        return 2
    try:
        lab = Lab(hosts=args.hosts, scenario=args.scenario, time_scale=args.time_scale, http=args.http, seed=args.seed,
                  workdir=args.state_file.resolve().parent, first_port=args.port,
                  allow_unencrypted=False if args.sealed_only else None)
        lab.start()
    except (LabError, ScenarioError) as exc:
        print(f"wuremote lab: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        state = lab.write_state(args.state_file)
        print(f"wuremote lab: {len(lab.hosts)} hosts listening on 127.0.0.1; state in {state}; "
              f"inventory in {state.with_name(state.stem + '-inventory.toml')}; Ctrl-C stops", flush=True)
        for endpoint in lab.endpoints:
            faults = lab.hosts[endpoint.name].spec.faults.describe()
            print(f"  {endpoint.name:<10} {endpoint.url:<32} {endpoint.scenario}" + (f"  faults: {faults}" if faults else ""),
                  flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        lab.stop()
    print("wuremote lab: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
