"""Ansible's YAML (and JSON) inventory: groups with hosts, children and vars, under any top-level names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from ..ansible import ansible_var
from ..model import InventoryError
from ..passwords import PASSWORD_ENV, Vaulted
from ..ranges import expand
from ..source import Source
from ..vars import Var, unknown_name


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML with positions; Ansible's !unsafe is text and !vault a clear error."""

    path = ""


def _construct_vault(loader: _Loader, node: yaml.Node) -> Any:
    return Vaulted("!vault")  # ansible_var names the var; a vault value elsewhere is refused there


_Loader.add_constructor("!vault", _construct_vault)
_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


class YamlDoc:
    """One YAML file's node tree, walked with the file:line of every key at hand."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        if text.lstrip().startswith("$ANSIBLE_VAULT;"):
            raise InventoryError(f"{path}:1: this file is ansible-vault encrypted; wuremote does not decrypt "
                                 f"vault; set password_env/{PASSWORD_ENV} or enter it at the prompt")
        self.loader = _Loader(text)
        self.loader.path = path
        try:
            self.root = self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:  # its own text quotes the line, which may hold a password
            mark = exc.problem_mark or exc.context_mark
            raise InventoryError(f"{path}:{mark.line + 1 if mark else 1}: {exc.problem or exc.context}; "
                                 "fix the YAML syntax") from None
        except yaml.YAMLError as exc:
            raise InventoryError(f"{path}:1: {exc.__class__.__name__}; fix the YAML syntax") from None

    def where(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def items(self, node: yaml.Node | None, what: str) -> Iterator[tuple[str, yaml.Node, str]]:
        """(key, value node, where) of a mapping; an empty value is an empty mapping."""
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            return
        if not isinstance(node, yaml.MappingNode):
            raise InventoryError(f"{self.where(node)}: {what} must be a mapping of names")
        self.loader.flatten_mapping(node)  # YAML merge keys (<<: *defaults)
        for key, value in node.value:
            yield str(self.loader.construct_object(key)), value, self.where(key)

    def ansible_vars(self, node: yaml.Node | None, what: str) -> dict[str, Var]:
        found: dict[str, Var] = {}
        for name, value, where in self.items(node, what):
            pair = ansible_var(name, self.loader.construct_object(value, deep=True), where)
            if pair is not None:
                found[pair[0]] = pair[1]
        return found


def read_yaml(path: str, text: str) -> Source:
    doc = YamlDoc(path, text)
    src = Source(path, ansible=True)

    def read_group(name: str, node: yaml.Node, where: str) -> None:
        group = None if name == "all" else src.group(name, where)
        for key, value, key_where in doc.items(node, f"group {name}"):
            if key == "vars":
                target = src.vars if group is None else group.vars
                target.update(doc.ansible_vars(value, f"{name}'s vars"))
            elif key == "hosts":
                for pattern, host_vars, host_where in doc.items(value, f"{name}'s hosts"):
                    for host_name in expand(pattern, host_where):
                        src.host(host_name, host_where).vars.update(doc.ansible_vars(host_vars, f"host {host_name}"))
                        if group is not None:
                            group.hosts.append(host_name)
            elif key == "children":
                for child, child_node, child_where in doc.items(value, f"{name}'s children"):
                    if group is not None:
                        group.children.append((child, child_where))
                    read_group(child, child_node, child_where)
            else:
                raise unknown_name(key, key_where, ("children", "hosts", "vars"), "group key")

    for name, node, where in doc.items(doc.root, "an Ansible YAML inventory"):
        read_group(name, node, where)
    return src
