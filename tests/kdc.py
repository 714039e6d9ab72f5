"""A real MIT Kerberos KDC (Debian's krb5-kdc) on loopback, for the Kerberos tests.

``Kdc(workdir).start()`` writes a realm (LAB.TEST) into ``workdir``: krb5.conf and kdc.conf, a
database with a user principal and the service principals a WinRM host registers (HTTP/,
WSMAN/ and host/ for 127.0.0.1: every lab host listens there), a keytab holding the service
keys, and starts ``krb5kdc`` in the foreground on a free port; ``env`` is what clients and the
lab's acceptor read (KRB5_CONFIG, KRB5_KTNAME, KRB5CCNAME).  ``kinit()`` puts the user's ticket
in the cache (pywinrm's Kerberos reads only a cache; pypsrp gets its own with the password).
``stop()`` ends the KDC process this object started, by its pid.

``missing()`` says which piece is not installed (the KDC binaries, python-gssapi, pykerberos),
so a test skips with that reason instead of failing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

REALM = "LAB.TEST"
SERVICES = ("HTTP", "WSMAN", "host")  # the SPNs a Windows host's WinRM answers to
TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")
SBIN = ("/usr/sbin", "/usr/local/sbin")


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing() -> str | None:
    """What is not installed for the Kerberos tests, or None."""
    absent = [name for name in TOOLS if _tool(name) is None]
    if absent:
        return f"MIT Kerberos KDC tools not installed ({', '.join(absent)}: apt-get install krb5-kdc krb5-admin-server krb5-user)"
    modules = [name for name in ("gssapi", "krb5", "kerberos") if importlib.util.find_spec(name) is None]
    if modules:
        return f"Python Kerberos modules not installed ({', '.join(modules)}: pip install gssapi krb5 pykerberos, with libkrb5-dev)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Kdc:
    def __init__(self, workdir: Path, user: str, password: str) -> None:
        self.dir = workdir
        self.user = user
        self.password = password
        self.port = _free_port()
        self.keytab = workdir / "services.keytab"
        self.cache = workdir / "ccache"
        self.env = {"KRB5_CONFIG": str(workdir / "krb5.conf"), "KRB5_KDC_PROFILE": str(workdir / "kdc.conf"),
                    "KRB5_KTNAME": f"FILE:{self.keytab}", "KRB5CCNAME": f"FILE:{self.cache}"}
        self._process: subprocess.Popen[bytes] | None = None

    def _run(self, *args: str, stdin: str | None = None) -> None:
        tool = _tool(args[0])
        assert tool is not None
        subprocess.run([tool, *args[1:]], input=stdin.encode() if stdin is not None else None, env={**os.environ, **self.env},
                       check=True, capture_output=True, timeout=60)

    def start(self) -> Kdc:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "kdc.conf").write_text(
            f"[kdcdefaults]\n kdc_ports = {self.port}\n kdc_tcp_ports = {self.port}\n"
            f"[realms]\n {REALM} = {{\n  database_name = {self.dir / 'principal'}\n"
            f"  key_stash_file = {self.dir / 'stash'}\n  acl_file = {self.dir / 'kadm5.acl'}\n"
            "  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n }\n"
            f"[logging]\n kdc = FILE:{self.dir / 'kdc.log'}\n", encoding="utf-8")
        (self.dir / "krb5.conf").write_text(
            f"[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"
            " rdns = false\n dns_canonicalize_hostname = false\n udp_preference_limit = 1\n"
            f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{self.port}\n }}\n"
            f"[domain_realm]\n 127.0.0.1 = {REALM}\n localhost = {REALM}\n", encoding="utf-8")
        (self.dir / "kadm5.acl").write_text("", encoding="utf-8")
        self._run("kdb5_util", "create", "-s", "-r", REALM, "-P", "lab-master-key")
        self._run("kadmin.local", "-r", REALM, "-q", f"addprinc -pw {self.password} {self.user}")
        for service in SERVICES:
            self._run("kadmin.local", "-r", REALM, "-q", f"addprinc -randkey {service}/127.0.0.1")
            self._run("kadmin.local", "-r", REALM, "-q", f"ktadd -k {self.keytab} {service}/127.0.0.1")
        tool = _tool("krb5kdc")
        assert tool is not None
        self._process = subprocess.Popen([tool, "-n", "-r", REALM], env={**os.environ, **self.env},
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:  # ready once it hands out a ticket (bounded)
            try:
                self.kinit()
                return self
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.05)

    def kinit(self) -> None:
        self._run("kinit", self.user, stdin=self.password + "\n")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
