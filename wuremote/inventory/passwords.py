"""Where each host's password comes from, in order: password_env, a password written in the
inventory (with a warning naming the file), WUREMOTE_PASSWORD, the prompt (once per username)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..secret import Secret
from .model import HostConfig, InventoryError
from .vars import Var

PASSWORD_ENV = "WUREMOTE_PASSWORD"


class Passwords:
    """Finds the hosts' passwords of one inventory, asking the prompt at most once per username."""

    def __init__(self, environ: Mapping[str, str], prompt: Callable[[str], str] | None) -> None:
        self.environ = environ
        self.prompt = prompt
        self.asked: dict[str, Secret] = {}
        self.plaintext_files: dict[str, str] = {}  # file -> first line holding a password

    def find(self, config: HostConfig, merged: dict[str, Var]) -> Secret | None:
        written = merged.get("password")
        if written is not None:
            file, _, line = written.where.rpartition(":")
            self.plaintext_files.setdefault(file, line)
        if config.password_env:
            value = self.environ.get(config.password_env)
            if value is None:
                raise InventoryError(f"{merged['password_env'].where}: password_env names {config.password_env}, "
                                     "which is not set; export it before running wuremote")
            return Secret(value)
        if written is not None:
            secret: Secret = written.value
            return secret
        if PASSWORD_ENV in self.environ:
            return Secret(self.environ[PASSWORD_ENV])
        if self.prompt is None or not config.username or config.auth in ("certificate", "kerberos"):
            return None
        if config.username not in self.asked:
            self.asked[config.username] = Secret(self.prompt(config.username))
        return self.asked[config.username]

    def warnings(self) -> list[str]:
        return [f"{file}:{line}: a plaintext password is stored in this file; remove it and set password_env "
                f"(a variable's name) or {PASSWORD_ENV}, or enter it at the prompt"
                for file, line in self.plaintext_files.items()]
