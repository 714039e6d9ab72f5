"""From the moment a rebooting lab host accepts connections again to wuremote's first
successful command on it.

    python bench/reboot.py [--reboots 10] [--time-scale 0.1] [--json FILE]

The target holds for the maximum, not only the median: the figure depends on where the wait's
probe loop stands when the host returns, so one slow reboot in ten is the one that matters.
wuremote's own reboot() (wuremote/engine/reboot.py) restarts a lab host over PSRP with the
settings a user gets by default (TransportSettings(), RebootSettings()), except the
stability window, which is shortened to keep the bench quick: it is excluded from the
figure and printed separately.  The lab stamps the moment its listener is back; the
transport is the real one, wrapped only to stamp each call that succeeded.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from benchlib import at_most, info, median, parser, report

from wuremote.demo import demo_hosts
from wuremote.engine.reboot import RebootSettings, reboot
from wuremote.lab.lab import Lab
from wuremote.transport import TransportSettings, open_transport

TARGET_S = 2.0


class Stamped:
    """The real transport, noting when each call succeeded (the reboot code sees no difference).

    Every attribute is the real transport's, read *and written*: an earlier version kept writes
    for itself, so the reboot wait's one-open-per-probe setting never reached the transport, which
    went on retrying its opens with 1 -> 2 -> 4 s backoff and put seconds on the figure
    (tests/test_reboot_probe.py holds this).
    """

    _OWN = ("inner", "successes")

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "successes", [])

    def run_step(self, *args: Any, **kwargs: Any) -> Any:
        result = self.inner.run_step(*args, **kwargs)
        self.successes.append(time.monotonic())
        return result

    def run_command(self, *args: Any, **kwargs: Any) -> Any:
        result = self.inner.run_command(*args, **kwargs)
        self.successes.append(time.monotonic())
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)


def stamp_ups(lab: Lab, name: str) -> list[float]:
    """Times the host's listener came back; the callback is registered after the listener's own
    start callback, so each stamp is taken once connections are accepted."""
    ups: list[float] = []

    async def stamp_up() -> None:
        ups.append(time.monotonic())

    lab.call(lambda: lab.host(name).on_up(stamp_up))
    return ups


def one_reboot(host: Any, ups: list[float], settings: RebootSettings,
               transport_settings: TransportSettings) -> dict[str, float]:
    transport = Stamped(open_transport(host, transport_settings))
    started = time.monotonic()
    try:
        outcome = reboot(transport, run_id="bench-reboot", reason="bench", settings=settings)
    finally:
        transport.close()
    up = next(t for t in ups if t > started)
    first = next(t for t in transport.successes if t > up)
    return {"after_up": first - up, "total": outcome.duration, "back_after": outcome.back_after,
            "down": up - started}


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--reboots", type=int, default=10, help="reboots measured (the figure depends on where the "
                                                           "retry loop stands when the host returns)")
    cli.add_argument("--time-scale", type=float, default=0.1, help="lab time scale (0.1: a 45 s boot lasts 4.5 s)")
    cli.add_argument("--stability-window", type=float, default=1.0, help="seconds (wuremote's default is 10)")
    cli.add_argument("--poll-interval", type=float, default=RebootSettings().poll_interval,
                     help="RebootSettings.poll_interval (default: wuremote's)")
    cli.add_argument("--open-retries", type=int, default=TransportSettings().open_retries,
                     help="TransportSettings.open_retries (default: wuremote's)")
    args = cli.parse_args()
    settings = replace(RebootSettings(), stability_window=args.stability_window, poll_interval=args.poll_interval)
    transport_settings = TransportSettings(open_retries=args.open_retries)
    runs = []
    with Lab(hosts=1, scenario="healthy", time_scale=args.time_scale) as lab:
        host = demo_hosts(lab)[0]
        ups = stamp_ups(lab, host.name)
        for _ in range(args.reboots):
            runs.append(one_reboot(host, ups, settings, transport_settings))
    after_up = [r["after_up"] for r in runs]
    figures = [
        at_most("listening again -> first successful command (median)", median(after_up), "s", TARGET_S),
        at_most("listening again -> first successful command (max)", max(after_up), "s", TARGET_S),
        info("restart request -> listening again (median)", median([r["down"] for r in runs]), "s", "the lab's boot"),
        info("reboot() total (median), stability window included", median([r["total"] for r in runs]), "s"),
        info("stability window (excluded above)", settings.stability_window, "s"),
    ]
    print("  after-up per reboot: " + ", ".join(f"{v:.2f}" for v in after_up) + " s")
    report("reboot", {"reboots": args.reboots, "lab_time_scale": args.time_scale, "transport": "psrp",
                      "reboot_poll_interval_s": settings.poll_interval, "stability_window_s": settings.stability_window,
                      "open_retries": transport_settings.open_retries, "backoff_s": transport_settings.backoff},
           figures, args.json)


if __name__ == "__main__":
    main()
