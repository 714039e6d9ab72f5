"""Where each host's password comes from, in order: password_env, a password written in the
inventory (with a warning naming the file), WUREMOTE_PASSWORD, the prompt (once per username).

An Ansible ``!vault`` password is not decrypted: it is passed over with a warning when another
source gives the password, and refused only when none does.

Passwords are looked up only for the hosts a run takes (after ``--limit``), so a variable that
only excluded hosts need may be unset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..secret import Secret
from .model import HostConfig, InventoryError
from .vars import Var

PASSWORD_ENV = "WUREMOTE_PASSWORD"


@dataclass(frozen=True)
class Vaulted:
    """An Ansible vault value wuremote does not decrypt; it stands where the password was written."""

    name: str  # the var as the file spells it (ansible_password)


@dataclass(frozen=True)
class PasswordVars:
    """The vars of one host that say where its password comes from, as the inventory merged them."""

    password: Var | None = None
    password_env: Var | None = None

    @classmethod
    def of(cls, merged: Mapping[str, Var]) -> PasswordVars:
        return cls(merged.get("password"), merged.get("password_env"))


def plaintext_warnings(written: Mapping[str, PasswordVars]) -> list[str]:
    """One warning per file that holds a plaintext password, naming its first such line."""
    files: dict[str, str] = {}
    for found in written.values():
        if found.password is not None and not isinstance(found.password.value, Vaulted):
            file, _, line = found.password.where.rpartition(":")
            files.setdefault(file, line)
    return [f"{file}:{line}: a plaintext password is stored in this file; remove it and set password_env "
            f"(a variable's name) or {PASSWORD_ENV}, or enter it at the prompt" for file, line in files.items()]


class Passwords:
    """Finds the hosts' passwords of one inventory, asking the prompt at most once per username."""

    def __init__(self, environ: Mapping[str, str], prompt: Callable[[str], str] | None) -> None:
        self.environ = environ
        self.prompt = prompt
        self.asked: dict[str, Secret] = {}
        self.vault_files: dict[str, str] = {}  # file -> the source used instead of its vault value

    def find(self, config: HostConfig, found: PasswordVars) -> Secret | None:
        written = found.password
        vaulted = written is not None and isinstance(written.value, Vaulted)
        if config.password_env:
            value = self.environ.get(config.password_env)
            if value is None:
                where = found.password_env.where if found.password_env else config.source
                raise InventoryError(f"{where}: password_env names {config.password_env}, "
                                     "which is not set; export it before running wuremote")
            return self._instead_of_vault(written, f"password_env {config.password_env}", Secret(value))
        if written is not None and not vaulted:
            secret: Secret = written.value
            return secret
        if PASSWORD_ENV in self.environ:
            return self._instead_of_vault(written, PASSWORD_ENV, Secret(self.environ[PASSWORD_ENV]))
        if self.prompt is None or not config.username or config.auth in ("certificate", "kerberos"):
            if written is not None:  # vaulted, and nothing else gives the password
                raise vault_error(written.where, written.written)
            return None
        if config.username not in self.asked:
            self.asked[config.username] = Secret(self.prompt(config.username))
        return self._instead_of_vault(written, "the prompt", self.asked[config.username])

    def _instead_of_vault(self, written: Var | None, source: str, secret: Secret) -> Secret:
        if written is not None and isinstance(written.value, Vaulted):
            self.vault_files.setdefault(written.where.rpartition(":")[0], source)
        return secret

    def warnings(self) -> list[str]:
        return [f"{file}: its ansible vault password is not decrypted by wuremote; the password comes from "
                f"{source} instead" for file, source in self.vault_files.items()]


def vault_error(where: str, name: str | None = None) -> InventoryError:
    """wuremote does not decrypt vault: say so, and where the password can come from instead."""
    what = "ansible vault value" + (f" for {name}" if name else "")
    return InventoryError(f"{where}: {what}: wuremote does not decrypt vault; "
                          f"set password_env/{PASSWORD_ENV} or enter it at the prompt")
