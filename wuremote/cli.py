"""The `wuremote` command: argument parsing and exit codes, nothing else.

Exit codes: 0 every host healthy, 1 some hosts not healthy, 2 usage or input error,
130 interrupted.  Heavy modules (pypsrp, pywinrm, rich) load only for the command that
needs them, so `wuremote --help` stays quick.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .contract.outcome import RunExit
from .store.journal import JournalError
from .store.lock import RunLockedError


class UsageError(Exception):
    """Bad input: one line naming the place and the fix; exit 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} must be from 0 to 100")
    return value


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shard; write K/N with 1 <= K <= N, e.g. 2/4")
    return int(match.group(1)), int(match.group(2))


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hosts", nargs="*", metavar="HOST", help="host names or addresses (or use -i)")
    parser.add_argument("-i", "--inventory", type=Path, help="inventory file: TOML, CSV, Ansible YAML or INI")
    parser.add_argument("--limit", metavar="PATTERN", help="only hosts/groups matching PATTERN (a,b,web*,!db01)")
    parser.add_argument("--list-hosts", action="store_true",
                        help="print the hosts this would take and how each is reached; connect to none")
    parser.add_argument("--forks", type=_positive_int, help="hosts worked on at once (default 20)")
    parser.add_argument("--max-requests", type=_positive_int,
                        help="requests in flight at once from this controller (default: 4 per core, at least 4)")
    parser.add_argument("--max-fail-percent", type=_percent,
                        help="stop starting new hosts once this share has failed (default 100: never)")
    parser.add_argument("--state-dir", type=Path, help="journal and runs/<run-id>/ artifacts (default ./.wuremote)")
    parser.add_argument("--host-timeout", type=float, help="seconds one host may take (default 6 h)")
    parser.add_argument("--no-answer-timeout", type=float, default=600.0, metavar="SECONDS",
                        help="a host that does not answer this long ends unreachable, its work recorded for resume "
                             "(default 600)")
    _add_stop_timeout(parser)
    parser.add_argument("--shard", type=_shard, metavar="K/N",
                        help="only the K-th of N deterministic slices of the hosts (CI matrix jobs)")
    parser.add_argument("--executor", choices=("local", "dask"),
                        help="where hosts are worked on: controller threads, or Dask workers in their sites")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="the Dask scheduler (tcp://host:8786), for --executor dask")
    parser.add_argument("--kb-dir", metavar="DIR",
                        help="folder of .msu files named as the Update Catalog names them: install-kb pushes the one "
                             "that fits each host's build and architecture (a host's kb_file wins)")
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--plain", action="store_true", help="one plain line per event instead of the live view")
    view.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: plain lines, and each step's streams as they arrive; -vv: also the WS-Man "
                             "messages on stderr, secrets masked")
    bare = parser.add_argument_group("connection (for HOST arguments; with -i, a flag given overrides the "
                                     "inventory for every host the run takes, as Ansible's -u and -c do)")
    bare.add_argument("--transport", choices=("psrp", "winrm"), help="default psrp")
    bare.add_argument("--auth", choices=("basic", "ntlm", "negotiate", "kerberos", "credssp", "certificate"),
                      help="default negotiate")
    bare.add_argument("--user", help="user name (password from WUREMOTE_PASSWORD or a prompt, never a flag)")
    bare.add_argument("--scheme", choices=("https", "http"), help="default https")
    bare.add_argument("--port", type=_positive_int, help="default 5986 for https, 5985 for http")
    bare.add_argument("--ca-file", help="CA bundle that signs the hosts' WinRM certificates")


def _add_install_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("installing updates (over the inventory's install vars for every host taken)")
    group.add_argument("--install", nargs="?", const="", default=None, metavar="CATEGORIES",
                       help="once updates work, install the updates of these Windows Update categories (comma list, "
                            "e.g. SecurityUpdates,CriticalUpdates,UpdateRollups; * for all; bare: SecurityUpdates,"
                            "CriticalUpdates); check lists what is pending in them")
    group.add_argument("--install-optional", action="store_true", default=None,
                       help="also optional updates (BrowseOnly), which are skipped unless asked")


def _install_values(args: argparse.Namespace) -> dict[str, Any]:
    """The install vars --install and --install-optional set, checked before any connection."""
    from .contract.updates import UnknownCategory, parse_categories

    values: dict[str, Any] = {}
    if getattr(args, "install", None) is not None:
        try:
            values["install"] = parse_categories(args.install)
        except UnknownCategory as exc:
            raise UsageError(f"--install: {exc} (a host name right after a bare --install is read as a category: "
                             "put --install after the hosts, or write --install=SecurityUpdates)") from None
    if getattr(args, "install_optional", None):
        values["install_optional"] = True
    return values


def _add_stop_timeout(parser: argparse.ArgumentParser, default: float | None = 30.0) -> None:
    parser.add_argument("--stop-timeout", type=float, default=default, metavar="SECONDS",
                        help="after Ctrl-C or SIGTERM: how long hosts get to run owed restores before they are "
                             "recorded for resume and the run ends (default 30" + (")" if default else "; resume: the run's own)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wuremote",
                                     description="Repair Windows Update on remote Windows hosts over WinRM/PSRP.",
                                     epilog="exit codes: 0 all healthy, 1 some hosts not healthy, 2 usage or input error, "
                                            "130 interrupted (Ctrl-C, SIGTERM, SIGHUP: `wuremote resume` continues).  "
                                            "Defaults: wuremote.toml here or "
                                            "$XDG_CONFIG_HOME/wuremote/config.toml, and WUREMOTE_* variables")
    parser.add_argument("--version", action="version", version=_version_text())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (("repair", "diagnose, walk the repair ladder, reboot when allowed, verify"),
                       ("check", "diagnose only: the prevention report; changes nothing"),
                       ("plan", "what would run on each host and why; sends no host-changing script")):
        target = commands.add_parser(name, help=text, description=text)
        _add_target_arguments(target)
        _add_install_arguments(target)
    resume = commands.add_parser("resume", help="continue an interrupted run from its journal")
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument("--state-dir", type=Path, help="default ./.wuremote")
    resume.add_argument("--forks", type=_positive_int, default=None, help="default: the run's own")
    _add_stop_timeout(resume, default=None)
    view = resume.add_mutually_exclusive_group()
    view.add_argument("--plain", action="store_true")
    view.add_argument("--json", action="store_true")
    report = commands.add_parser("report", help="print (or re-render) a run's report; `report merge RUN_DIR...` combines shards",
                                 usage="wuremote report RUN_ID [--rerender] | wuremote report merge RUN_DIR... [--out DIR]")
    report.add_argument("target", nargs="+", metavar="RUN_ID | merge RUN_DIR...")
    report.add_argument("--state-dir", type=Path, help="default ./.wuremote")
    report.add_argument("--rerender", action="store_true", help="write report.json, junit.xml and report.html again "
                                                                "from the journal")
    report.add_argument("--out", type=Path, default=Path("merged-report"),
                        help="for merge: the folder for the combined report.json, junit.xml and report.html")
    runs = commands.add_parser("runs", help="the runs of a state dir: id, command, started, outcomes, resumable")
    runs.add_argument("--state-dir", type=Path, help="default ./.wuremote")
    completion = commands.add_parser("completion", help="print a shell completion script: "
                                                        "eval \"$(wuremote completion bash)\"")
    completion.add_argument("shell", choices=("bash", "zsh"))
    demo = commands.add_parser("demo", help="start an embedded lab of broken hosts and repair them all")
    demo.add_argument("--state-dir", type=Path, default=None, help="where the demo's artifacts go (default: a temp dir)")
    demo.add_argument("--transport", choices=("psrp", "winrm"), default="psrp")
    demo.add_argument("--plain", action="store_true")
    demo.add_argument("--install", action="store_true",
                      help="also install each host's security and critical updates once updates work (repair --install)")
    lab = commands.add_parser("lab", help="start emulated Windows hosts on loopback (the demo's and the tests' target)")
    from .lab.__main__ import add_arguments  # small module; the lab's heavy parts load only when it runs

    add_arguments(lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _apply_defaults(args)
        if args.command == "lab":
            from .lab.__main__ import run

            return run(args)
        if args.command in ("repair", "check", "plan"):
            return _run(args)
        if args.command == "resume":
            return _resume(args)
        if args.command == "report":
            return _report(args)
        if args.command == "runs":
            return _runs(args)
        if args.command == "completion":
            from .completion import script

            print(script(build_parser(), args.shell))
            return int(RunExit.OK)
        if args.command == "demo":
            from .lab.__main__ import missing_extra

            problem = missing_extra()
            if problem:
                raise UsageError(f"demo: {problem}")
            from .demo import run_demo

            return run_demo(state_dir=args.state_dir, transport=args.transport, plain=args.plain, install=args.install)
    except (UsageError, JournalError, RunLockedError) as exc:  # bad input or state dir: one line, nothing touched
        print(f"wuremote: {exc}", file=sys.stderr)
        return int(RunExit.USAGE)
    except KeyboardInterrupt:
        print("wuremote: interrupted", file=sys.stderr)
        return int(RunExit.INTERRUPTED)
    parser.print_help()
    return int(RunExit.USAGE)


def _prompt(username: str) -> str:
    import getpass

    if not sys.stdin.isatty():
        raise UsageError(f"no password for {username}: set WUREMOTE_PASSWORD or password_env in the inventory")
    return getpass.getpass(f"password for {username}: ")


def _hosts(args: argparse.Namespace) -> list[Any]:
    """The hosts a run takes, every input checked before any connection (see inventory/targets.py)."""
    from .inventory import InventoryError, find_passwords, hosts_from_names, load_inventory, select
    from .inventory.targets import CONNECTION_FLAGS, apply_flags, default_vars, preflight

    if args.inventory and args.hosts:
        raise UsageError("give HOST arguments or -i INVENTORY, not both")
    if not args.inventory and not args.hosts:
        raise UsageError("no hosts: give HOST arguments or -i INVENTORY (see `wuremote repair --help`)")
    flags = {flag: getattr(args, flag) for flag in CONNECTION_FLAGS}
    try:
        low = default_vars(args.defaults.values, args.defaults.origin)  # config file and WUREMOTE_*: below the inventory
        if args.inventory:
            inventory = load_inventory(args.inventory, environ=os.environ, passwords=False, defaults=low)
        else:
            inventory = hosts_from_names(args.hosts, {}, environ=os.environ, passwords=False, low=low)
        for warning in inventory.warnings:
            print(f"wuremote: warning: {warning}", file=sys.stderr)
        del inventory.warnings[:]
        hosts = select(inventory, args.limit) if args.limit else inventory.hosts
        if args.shard:
            from .shard import shard

            hosts = shard(hosts, *args.shard)
        if not hosts:
            raise UsageError(f"--limit {args.limit!r} matches no host in {args.inventory}")
        hosts = apply_flags(hosts, flags)
        install = _install_values(args)
        if install:
            hosts = [dataclasses.replace(host, **install) for host in hosts]
        if not args.list_hosts:  # listing connects to nothing, so it needs no password
            find_passwords(inventory, hosts, os.environ, _prompt)
            preflight(hosts)
    except InventoryError as exc:
        raise UsageError(str(exc)) from None
    for warning in inventory.warnings:
        print(f"wuremote: warning: {warning}", file=sys.stderr)
    return hosts


def _version_text() -> str:
    import platform

    from ._version import __version__

    return f"wuremote {__version__} (Python {platform.python_version()})"


def _apply_defaults(args: argparse.Namespace) -> None:
    """Options not given as flags: from WUREMOTE_* variables, then the config file, then built-in defaults
    (config.py).  ``args.defaults`` keeps the connection settings found, which sit below the inventory."""
    from .config import SETTINGS, ConfigError, Defaults, load_defaults

    if args.command in (None, "lab", "demo", "completion"):
        args.defaults = Defaults({}, {}, None)
        return
    try:
        found = load_defaults(Path.cwd(), os.environ)
    except (ConfigError, OSError) as exc:
        raise UsageError(str(exc)) from None
    args.defaults = found
    for key, setting in SETTINGS.items():
        if setting.connection or not hasattr(args, key) or getattr(args, key) is not None:
            continue
        if args.command == "resume" and key == "forks":  # resume keeps the run's own unless --forks is given
            continue
        if key == "inventory" and getattr(args, "hosts", None):
            continue
        setattr(args, key, found.values.get(key, setting.default))


def _host_listing(hosts: list[Any]) -> str:
    """--list-hosts: each host the run would take and how it would be reached (no password is looked up)."""
    from .output.terminal import printable

    rows = [("host", "address", "connection", "user", "groups")]
    for host in hosts:
        rows.append((host.name, f"{host.address}:{host.effective_port}",
                     f"{host.transport} {host.scheme} {host.auth}", host.username or "-", ",".join(host.groups) or "-"))
    widths = [max(len(printable(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(printable(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + [f"{len(hosts)} host(s); no connection made"])


def _require_journal(state_dir: Path, run_id: str | None = None) -> None:
    """A state dir without a journal is a typo, not a place to start an empty one."""
    from .store.journal import JOURNAL_FILE

    if not (state_dir / JOURNAL_FILE).is_file():
        what = f"no run {run_id!r}: " if run_id else ""
        raise UsageError(f"{what}{state_dir} holds no wuremote journal ({JOURNAL_FILE}); pass the --state-dir "
                         "the run used (`wuremote runs --state-dir DIR` lists its runs)")


def _resume_hint(run_id: str, state_dir: Path) -> str:
    """The command that continues a run, with its --state-dir when it is not the default."""
    from .config import SETTINGS

    where = "" if Path(state_dir) == SETTINGS["state_dir"].default else f" --state-dir {state_dir}"
    return f"wuremote resume {run_id}{where}"


def _runs(args: argparse.Namespace) -> int:
    from .output.terminal import runs_table
    from .store.journal import Journal, JournalError

    _require_journal(args.state_dir)
    try:
        with Journal(args.state_dir) as journal:
            rows = [(run, journal.events(run.run_id)) for run in journal.runs()]
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    print(runs_table(rows))
    return int(RunExit.OK)


def _views(args: argparse.Namespace, hosts: list[str]) -> tuple[list[Any], Any]:
    """Subscribers for the chosen view, and the live view's context (or None)."""
    from .output.live import JsonView, LiveView, PlainView, VerboseView

    if args.json:
        return [JsonView(sys.stdout, streams=bool(getattr(args, "verbose", 0)))], None
    if getattr(args, "verbose", False):
        return [VerboseView(sys.stdout)], None
    if args.plain or not sys.stdout.isatty():
        return [PlainView(sys.stdout)], None
    from rich.console import Console

    live = LiveView(Console(), hosts)
    return [live], live


def _run(args: argparse.Namespace) -> int:
    from .engine.runner import Runner, RunOptions
    from .transport import TransportSettings

    hosts = _hosts(args)
    kb_dir = getattr(args, "kb_dir", None)
    if kb_dir is not None and not any(Path(kb_dir).glob("*.msu")):
        raise UsageError(f"--kb-dir {kb_dir}: {'holds no .msu file' if Path(kb_dir).is_dir() else 'is not a folder'}; "
                         "give the folder the Update Catalog downloads are in")
    if args.list_hosts:
        print(_host_listing(hosts))
        return int(RunExit.OK)
    if args.executor == "dask" and not args.scheduler:
        raise UsageError("--executor dask needs --scheduler ADDRESS (the Dask scheduler, e.g. tcp://sched:8786)")
    options = RunOptions(command=args.command, forks=args.forks, max_fail_percent=args.max_fail_percent,
                         state_dir=args.state_dir, host_timeout=args.host_timeout, executor=args.executor,
                         scheduler=args.scheduler, stop_timeout=args.stop_timeout,
                         no_answer_timeout=args.no_answer_timeout,
                         kb_dir=str(Path(kb_dir).resolve()) if kb_dir is not None else None,
                         transport=TransportSettings(max_requests=args.max_requests))
    subscribers, live = _views(args, [h.name for h in hosts])
    runner = Runner(hosts, options, subscribers=subscribers)
    if args.verbose < 2:
        return _execute(runner, live, args)
    from .wsman_trace import stop_trace, trace_wsman

    trace = trace_wsman(h.password for h in hosts if h.password is not None)
    try:
        return _execute(runner, live, args)
    finally:
        stop_trace(trace)


def _execute(runner: Any, live: Any, args: argparse.Namespace) -> int:
    with _stop_signals_as_ctrl_c():
        if live is not None:
            with live:
                summary = runner.run()
        else:
            summary = runner.run()
    _after_run(summary, live, args)
    if summary.abandoned:
        # Their threads still wait on hosts that do not answer; the journal and report are
        # written, so leave without joining them (Python would wait for each at exit).
        print(f"wuremote: {len(summary.abandoned)} host(s) did not finish within --stop-timeout; "
              "their owed work is recorded for resume", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(summary.exit_code))
    return int(summary.exit_code)


def _after_run(summary: Any, live: Any, args: argparse.Namespace) -> None:
    """The lines that end a run: after the live view, its per-host table (the live view shows only the
    active and failed hosts); then where the artifacts are, all three; then how to continue."""
    out = sys.stderr if getattr(args, "json", False) else sys.stdout
    if live is not None and summary.report_json.is_file():
        import json

        from .output.terminal import render_text

        report = json.loads(summary.report_json.read_text(encoding="utf-8"))
        print(render_text(report, width=live.console.width - 1), file=out)  # folded between words, not mid-name
    html = summary.run_dir / "report.html"
    print(f"run {summary.run_id}: report {summary.report_json}  junit {summary.junit_xml}  html {html}", file=out)
    if summary.journal_error:
        print(f"wuremote: the journal could not be written: {summary.journal_error}", file=sys.stderr)
    if summary.interrupted:
        print(f"interrupted: continue with `{_resume_hint(summary.run_id, args.state_dir)}`", file=out)


@contextmanager
def _stop_signals_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (a CI job cancelled, `timeout`) and SIGHUP (the SSH session closed) stop a run as
    Ctrl-C does: no new work, owed restores run, journal and report written, exit 130, resumable."""

    def as_ctrl_c(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    wanted = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, as_ctrl_c) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _resume(args: argparse.Namespace) -> int:
    from .engine.progress import progress_of
    from .engine.runner import Runner, RunOptions
    from .store.journal import Journal, JournalError

    _require_journal(args.state_dir, args.run_id)
    journal = Journal(args.state_dir)
    try:
        run = journal.run(args.run_id)
        progress = progress_of(journal.events(args.run_id))
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    finally:
        journal.close()
    if run.status == "finished":  # nothing to continue: no password is asked for, the summary is shown
        print(f"run {args.run_id} finished already; nothing to resume. Its report:")
        return _report(argparse.Namespace(target=[args.run_id], state_dir=args.state_dir, rerender=False))
    from .inventory import InventoryError, hosts_from_snapshot

    try:
        hosts = hosts_from_snapshot(run.inventory, environ=os.environ, prompt=_prompt)
    except InventoryError as exc:
        raise UsageError(str(exc)) from None
    # The run goes on as it began (executor, scheduler, time scale, reboot and transport settings);
    # --forks given to resume overrides the run's own.
    overrides: dict[str, Any] = {"command": run.command, "state_dir": args.state_dir}
    if args.forks is not None:
        overrides["forks"] = args.forks
    if args.stop_timeout is not None:
        overrides["stop_timeout"] = args.stop_timeout
    options = RunOptions.from_snapshot(run.options or {}, **overrides)
    subscribers, live = _views(args, [h.name for h in hosts])
    runner = Runner(hosts, options, subscribers=subscribers, run_id=args.run_id, resume=progress)
    return _execute(runner, live, args)


def _report(args: argparse.Namespace) -> int:
    if args.target[0] == "merge":
        return _merge(args.target[1:], args.out)
    if len(args.target) != 1:
        raise UsageError("give one RUN_ID, or `merge` and the run dirs to combine")
    import json

    from .output.report import write_report
    from .output.terminal import render_text
    from .store.journal import Journal, JournalError
    from .store.rundir import RunDir

    run_id = args.target[0]
    _require_journal(args.state_dir, run_id)
    journal = Journal(args.state_dir)
    try:
        journal.run(run_id)
        events = journal.events(run_id)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    finally:
        journal.close()
    run_dir = RunDir(args.state_dir, run_id)
    if args.rerender or not run_dir.report_json.exists():
        write_report(run_dir, events)
    report = json.loads(run_dir.report_json.read_text(encoding="utf-8"))
    print(render_text(report))
    code = report["run"].get("exit_code")
    return code if code in (0, 1, 130) else 1


def _merge(run_dirs: list[str], out: Path) -> int:

    from .output.merge import MergeError, load_run, merge_reports
    from .output.report import write_report_files
    from .output.terminal import render_text

    try:
        merged = merge_reports([(Path(d), load_run(Path(d))) for d in run_dirs], out)
    except MergeError as exc:
        raise UsageError(str(exc)) from None
    write_report_files(out, merged)
    print(render_text(merged))
    print(f"merged {len(run_dirs)} runs into {out}/ (report.json, junit.xml, report.html)")
    return int(merged["run"]["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
