"""`python -m wuremote.lab.models`: the shipped texts' hashes next to the ones the lab models.

A maintainer who changed a script and its model together copies the new hash into the
model (or PRELUDE_SHA256 / BOOTSTRAP_SHA256); nothing updates them automatically.
"""

from __future__ import annotations

import sys

from ...contract.scripts import load_scripts, prelude_text, psrp_chain_text, psrp_prelude_text, scripts_dir, sha256_text
from .registry import BOOTSTRAP_SHA256, MODELS, PRELUDE_SHA256, PSRP_CHAIN_SHA256, PSRP_PRELUDE_SHA256


def main() -> int:
    rows = [
        ("_prelude.ps1", sha256_text(prelude_text()), PRELUDE_SHA256),
        ("_winrs_bootstrap.ps1", sha256_text(scripts_dir().joinpath("_winrs_bootstrap.ps1").read_text(encoding="utf-8")), BOOTSTRAP_SHA256),
        ("_psrp_prelude.ps1", sha256_text(psrp_prelude_text()), PSRP_PRELUDE_SHA256),
        ("_psrp_chain.ps1", sha256_text(psrp_chain_text()), PSRP_CHAIN_SHA256),
    ]
    for name, script in load_scripts().items():
        modelled = MODELS.get(name)
        rows.append((name, script.sha256, modelled.sha256 if modelled else "(no model)"))
    stale = 0
    for name, actual, recorded in rows:
        mark = "ok" if actual == recorded else "DIFFERS"
        stale += actual != recorded
        print(f"{mark:8} {name:24} shipped {actual}  modelled {recorded}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
