"""`python -m wuremote.lab.selfcheck`: start a mixed lab and talk to every host with the raw clients.

Until the orchestrator lands, this is the README's first command: it shows the lab
answering pypsrp (PSRP: a runspace pool, wuremote's boot-info script, an exit code) and
pywinrm (WinRS: a cmd command) over HTTPS with the lab's own CA, and prints one row a host.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table


def main() -> int:
    from pypsrp.host import PSHost
    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan
    import winrm

    from ..scripts import get_script
    from .lab import Lab

    console = Console()
    started = time.monotonic()
    payload = get_script("boot-info").payload()
    table = Table(title="wuremote lab: raw pypsrp and pywinrm calls against emulated Windows hosts")
    for column in ("host", "scenario", "PSRP boot-info", "exit", "WinRS hostname", "HTTP requests"):
        table.add_column(column)
    failures = 0
    with Lab(scenario="mixed", hosts=13, time_scale=0.01) as lab:
        console.print(f"lab up: {len(lab.hosts)} hosts on 127.0.0.1 (HTTPS, lab CA {lab.ca_file})")
        for endpoint in lab.endpoints:
            wsman = WSMan(endpoint.address, port=endpoint.port, username=endpoint.username, password=endpoint.password,
                          ssl=True, auth="basic", cert_validation=endpoint.ca_file, operation_timeout=5, read_timeout=10)
            host = PSHost(None, None, False, "selfcheck", None, None, "1.0")
            with RunspacePool(wsman, host=host) as pool:
                shell = PowerShell(pool)
                shell.add_script(payload).add_parameter("RunId", "selfcheck")
                output = shell.invoke()
                shell.close()
            if shell.streams.error or not output:
                failures += 1
                problem = str(shell.streams.error[0]) if shell.streams.error else "no result object"
                table.add_row(endpoint.name, endpoint.scenario, f"[red]{problem}[/red]", str(host.rc), "", "")
                continue
            result = output[-1].extended_properties
            boot = result.get("facts")
            boot = boot.extended_properties if hasattr(boot, "extended_properties") else {}
            session = winrm.Session(endpoint.url, auth=(endpoint.username, endpoint.password), transport="basic",
                                    ca_trust_path=endpoint.ca_file, operation_timeout_sec=5, read_timeout_sec=10)
            name = session.run_cmd("hostname").std_out.decode().strip()
            last_boot = boot.get("last_boot_utc", "?") if isinstance(boot, dict) else "?"
            table.add_row(endpoint.name, endpoint.scenario, f"last boot {str(last_boot)[:19]}", str(host.rc or 0), name,
                          str(lab.requests_served(endpoint.name)))
    console.print(table)
    console.print(f"done in {time.monotonic() - started:.1f}s, {failures} host(s) failed. "
                  "The repair orchestrator (`wuremote repair`) is not built yet.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
