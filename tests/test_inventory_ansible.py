"""Ansible inventories as Ansible reads them (issue 15): one test per item of the issue."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from wuremote.inventory import HostConfig, Inventory, InventoryError, load_inventory, select

SECRET = "Sup3r-s3cret!"
VAULT = """!vault |
          $ANSIBLE_VAULT;1.1;AES256
          30653063643462663232316137663538373633636436383736366330613765363232313463616662
          3461"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path | str, **kwargs: Any) -> Inventory:
    kwargs.setdefault("environ", {})
    return load_inventory(path, **kwargs)


def by_name(inventory: Inventory) -> dict[str, HostConfig]:
    return {host.name: host for host in inventory.hosts}


MIXED = """
[win]
w1 ansible_connection=psrp
w2 ansible_connection=winrm

[linux]
l1
l2
l3 ansible_connection=local
"""


def test_a_host_without_ansible_connection_is_not_windows(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.ini", MIXED)
    inventory = load(path)
    assert sorted(by_name(inventory)) == ["w1", "w2"]
    assert set(inventory.left_out) == {"l1", "l2", "l3"}
    default = [w for w in inventory.warnings if "no ansible_connection" in w]
    assert len(default) == 1 and "left out 2 host(s)" in default[0] and "ssh" in default[0]


def test_limit_on_a_group_of_only_non_windows_hosts_says_so(tmp_path: Path) -> None:
    inventory = load(write(tmp_path, "hosts.ini", MIXED))
    with pytest.raises(InventoryError) as caught:
        select(inventory, "linux")
    message = str(caught.value)
    assert "names only hosts wuremote leaves out (3:" in message and "matches no host" not in message


VAULTED = f"""
win:
  hosts:
    w1:
      ansible_connection: psrp
      ansible_user: u
      ansible_password: {VAULT}
"""


def test_a_vault_password_is_passed_over_when_the_environment_gives_one(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", VAULTED)
    inventory = load(path, environ={"WUREMOTE_PASSWORD": SECRET})
    assert inventory.hosts[0].password is not None and inventory.hosts[0].password.reveal() == SECRET
    assert any(w.startswith(f"{path}:") and "vault" in w and "WUREMOTE_PASSWORD" in w for w in inventory.warnings)


def test_a_vault_password_is_passed_over_when_the_prompt_gives_one(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", VAULTED)
    inventory = load(path, prompt=lambda user: SECRET)
    assert inventory.hosts[0].password is not None and inventory.hosts[0].password.reveal() == SECRET


def test_a_vault_password_is_refused_when_nothing_else_gives_it(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", VAULTED)
    with pytest.raises(InventoryError, match=r"hosts.yml:7: ansible vault value for ansible_password"):
        load(path)


def test_a_vaulted_playbook_var_is_not_wuremotes_business(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", VAULTED.replace("ansible_password", "ansible_become_password"))
    assert load(path, environ={"WUREMOTE_PASSWORD": SECRET}).hosts[0].name == "w1"


@pytest.mark.parametrize(("line", "scheme", "port"), [
    ("w1 ansible_connection=winrm ansible_port=5985", "http", 5985),
    ("w1 ansible_connection=psrp ansible_port=5985", "http", 5985),
    ("w1 ansible_connection=psrp ansible_port=5986", "https", 5986),
    ("w1 ansible_connection=psrp ansible_port=5985 ansible_psrp_protocol=https", "https", 5985),
])
def test_port_5985_without_a_scheme_means_http(tmp_path: Path, line: str, scheme: str, port: int) -> None:
    host = load(write(tmp_path, "hosts.ini", f"[win]\n{line} ansible_winrm_transport=ntlm ansible_psrp_auth=ntlm\n")).hosts[0]
    assert (host.scheme, host.port) == (scheme, port)


@pytest.mark.parametrize(("value", "auth"), [("ntlm,kerberos", "ntlm"), ("kerberos, ntlm", "kerberos"),
                                             ("['digest', 'ntlm']", "ntlm"), ("ssl", "basic")])
def test_a_list_of_winrm_transports_gives_the_first_usable(tmp_path: Path, value: str, auth: str) -> None:
    path = write(tmp_path, "hosts.ini", f'[win]\nw1 ansible_connection=winrm "ansible_winrm_transport={value}"\n')
    assert load(path).hosts[0].auth == auth


def test_group_priority_orders_groups_of_the_same_depth(tmp_path: Path) -> None:
    text = """
[alpha]
w1
[zulu]
w1
[all:vars]
ansible_connection=psrp
[alpha:vars]
wuremote_max_reboots=1
[zulu:vars]
wuremote_max_reboots=2
"""
    assert load(write(tmp_path, "a.ini", text)).hosts[0].max_reboots == 2  # alphabetical: zulu last, zulu wins
    prioritised = text + "[alpha:vars]\nansible_group_priority=10\n"
    assert load(write(tmp_path, "b.ini", prioritised)).hosts[0].max_reboots == 1  # alpha comes last now


def test_a_folder_is_read_as_ansible_reads_it(tmp_path: Path) -> None:
    folder = tmp_path / "inventory"
    write(folder, "01-windows.yml", "win:\n  hosts:\n    w1:\n    w2:\n")
    write(folder, "02-more.ini", "[win]\nw3\n[dbs]\nw2\n")
    write(folder, "README.md", "not an inventory")
    write(folder, "group_vars/win.yml", "ansible_connection: psrp\nansible_user: u\n")
    write(folder, "host_vars/w3.yml", "ansible_port: 1234\n")
    inventory = load(folder)
    hosts = by_name(inventory)
    assert sorted(hosts) == ["w1", "w2", "w3"]
    assert hosts["w3"].port == 1234 and hosts["w1"].username == "u"
    assert inventory.groups["dbs"] == ["w2"]


def test_an_inventory_script_in_a_folder_points_at_ansible_inventory(tmp_path: Path) -> None:
    folder = tmp_path / "inventory"
    script = write(folder, "cmdb.py", "#!/usr/bin/env python3\nprint('{}')\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(InventoryError, match=r"cmdb.py:1: an inventory script.*-i ansible-inventory:"):
        load(folder)


HOSTS = [f"web{i:02d}" for i in range(1, 6)] + ["db01", "db02"]


@pytest.fixture
def fleet(tmp_path: Path) -> Inventory:
    return load(write(tmp_path, "hosts.ini", "[web]\nweb[01:05]\n[db]\ndb0[1:2]\n[london]\nweb01\ndb01\n"
                                             "[all:vars]\nansible_connection=psrp\n"))


def test_limit_regex(fleet: Inventory) -> None:
    assert [h.name for h in select(fleet, "~web0[2-3]")] == ["web02", "web03"]
    assert [h.name for h in select(fleet, "~(db|web05)")] == ["web05", "db01", "db02"]
    with pytest.raises(InventoryError, match="is not a regular expression"):
        select(fleet, "~web[")


def test_limit_intersection(fleet: Inventory) -> None:
    assert [h.name for h in select(fleet, "web,&london")] == ["web01"]


def test_limit_from_a_retry_file(fleet: Inventory, tmp_path: Path) -> None:
    retry = write(tmp_path, "site.retry", "web04\n\ndb02\n")
    assert [h.name for h in select(fleet, f"@{retry}")] == ["web04", "db02"]
    with pytest.raises(InventoryError, match="cannot read"):
        select(fleet, f"@{tmp_path / 'none.retry'}")


LISTED = {
    "_meta": {"hostvars": {
        "w1": {"ansible_connection": "psrp", "ansible_host": "10.0.0.1", "ansible_user": "CORP\\u",
               "ansible_password": {"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n3461\n"}},
        "l1": {"ansible_connection": "ssh"},
    }},
    "all": {"children": ["ungrouped", "win", "linux"]},
    "win": {"hosts": ["w1"]},
    "linux": {"hosts": ["l1"]},
}


def test_the_json_of_ansible_inventory_list_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.json", json.dumps(LISTED, indent=4))
    inventory = load(path, environ={"WUREMOTE_PASSWORD": SECRET})
    host = inventory.hosts[0]
    assert (host.name, host.address, host.username, host.groups) == ("w1", "10.0.0.1", "CORP\\u", ("win",))
    assert host.password is not None and host.password.reveal() == SECRET
    assert set(inventory.left_out) == {"l1"}


def fake_ansible_inventory(folder: Path) -> Path:
    """An `ansible-inventory` that prints LISTED, first on PATH (the real one is tested in test_ansible_oracle)."""
    script = write(folder, "bin/ansible-inventory", f"#!{sys.executable}\nimport json, sys\n"
                                                    f"assert sys.argv[1:] == ['-i', 'src.yml', '--list']\n"
                                                    f"print(json.dumps({LISTED!r}))\n")
    script.chmod(0o755)
    return script.parent


def test_ansible_inventory_source_runs_ansible_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{fake_ansible_inventory(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    inventory = load("ansible-inventory:src.yml", environ={"WUREMOTE_PASSWORD": SECRET, "PATH": os.environ["PATH"]})
    assert [h.name for h in inventory.hosts] == ["w1"]


def test_ansible_inventory_source_without_ansible_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InventoryError, match="ansible-inventory is not installed here; install ansible-core"):
        load("ansible-inventory:src.yml")


def test_ini_backslash_loss_is_warned_about_without_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.ini", "[win]\nw1 ansible_connection=psrp ansible_user=CORP\\dbadmin "
                                        "'ansible_password=a\\b' wuremote_site=\"x\\y\"\n")
    inventory = load(path)
    assert inventory.hosts[0].username == "CORPdbadmin"  # as Ansible reads it
    lost = [w for w in inventory.warnings if ": a backslash" in w]
    assert len(lost) == 1 and lost[0].startswith(f"{path}:2: ansible_user: a backslash")
    assert "dbadmin" not in lost[0]
