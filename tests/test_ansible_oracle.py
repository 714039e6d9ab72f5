"""wuremote's reading of Ansible inventories beside Ansible's own (`ansible-inventory --list`).

ansible-core (GPL) is a test oracle only: it runs here as a command, and wuremote never imports it.
For each inventory shape, Ansible's answer is checked against wuremote's in two ways:

- the hosts, their Windows-or-not verdict, address, port, user and group membership read directly
  from Ansible's merged hostvars and groups;
- every HostConfig field wuremote builds from the inventory itself equals the one it builds from
  Ansible's JSON of it (where Ansible did all the merging: precedence, ranges, children,
  group_vars/ and host_vars/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from wuremote.inventory import HostConfig, Inventory, load_inventory

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
pytestmark = pytest.mark.skipif(not ANSIBLE_INVENTORY.exists(), reason="ansible-core (the test extra) not installed")
REPO = Path(__file__).resolve().parent.parent
SECRET = "Sup3r-s3cret!"
ENVIRON = {"WUREMOTE_PASSWORD": SECRET, "WUREMOTE_CORP_PASSWORD": SECRET}
WINDOWS = ("psrp", "winrm", "ansible.builtin.psrp", "ansible.builtin.winrm")

VAULTED_PASSWORD = """!vault |
          $ANSIBLE_VAULT;1.1;AES256
          30653063643462663232316137663538373633636436383736366330613765363232313463616662
          3337393631393036356466633439366466326465326232330a323865646136653561613136653030
          36653433626236386636666665323163613561313836313733313731336536633438373630613531
          3563373035313833340a346262633362396330326564363537323130376433333535666434353836
          3461"""

SHAPES: dict[str, dict[str, str]] = {
    "nested-children": {"hosts.yml": """
all:
  vars: {ansible_connection: psrp, ansible_user: CORP\\\\svc}
  children:
    europe:
      vars: {wuremote_max_reboots: 1}
      children:
        paris:
          vars: {wuremote_max_reboots: 2}
          children:
            paris_web:
              hosts: {pweb01: {}, pweb02: {ansible_port: 6000}}
        berlin:
          hosts: {bdb01: {}}
"""},
    "group-vars-sections": {"hosts.ini": """
[web]
web01
web02 ansible_host=10.0.0.2

[web:vars]
ansible_connection=winrm
ansible_winrm_transport=ntlm
ansible_user=CORP\\svc-web
wuremote_reboot=never

[db]
db01

[db:vars]
ansible_connection=psrp
ansible_psrp_auth=negotiate

[all:vars]
ansible_user=CORP\\svc-all
"""},
    "letter-ranges": {"hosts.ini": """
[racks]
rack-[a:c]-node[1:2]
web[01:10:3]

[racks:vars]
ansible_connection=psrp
"""},
    "two-groups-conflicting-vars": {"hosts.yml": """
all:
  vars: {ansible_connection: psrp}
  children:
    zulu:
      vars: {wuremote_max_reboots: 7, ansible_port: 7000}
      hosts: {shared01: {}}
    alpha:
      vars: {wuremote_max_reboots: 1, ansible_port: 1000, ansible_group_priority: 10}
      hosts: {shared01: {}, only_alpha: {}}
    mid:
      vars: {wuremote_opt_in: [av-pause]}
      hosts: {shared01: {}}
"""},
    "mixed-linux-windows": {"hosts.ini": """
[windows]
win01 ansible_connection=psrp
win02 ansible_connection=ansible.builtin.winrm ansible_port=5985

[linux]
lin01
lin02 ansible_connection=ssh

[local]
localhost ansible_connection=local

[everything:children]
windows
linux
"""},
    "vault-encrypted-password": {"hosts.yml": f"""
win:
  vars:
    ansible_connection: psrp
    ansible_user: CORP\\\\svc
  hosts:
    w1:
      ansible_password: {VAULTED_PASSWORD}
    w2:
""", "group_vars/win.yml": "wuremote_opt_in: [clean-boot]\n"},
    "ini-backslash-and-transport-list": {"hosts.ini": """
[win]
w1 ansible_connection=winrm ansible_user=CORP\\dbadmin ansible_winrm_transport=ntlm,kerberos
w2 ansible_connection=winrm ansible_user='CORP\\dbadmin'
"""},
    "group-and-host-vars-files": {"hosts.ini": "[web]\nweb01\nweb02\n[app]\napp01\n",
                                  "group_vars/all.yml": "ansible_connection: psrp\nansible_port: 5986\n",
                                  "group_vars/web/main.yml": "ansible_port: 5985\nansible_user: w\n",
                                  "host_vars/web02.yml": "ansible_port: 5999\nansible_psrp_protocol: http\n"
                                                         "ansible_psrp_auth: ntlm\n"},
}


def ansible_list(source: Path, cwd: Path) -> dict[str, Any]:
    """Ansible's own reading of ``source`` (no ansible.cfg of the machine's, no vault password)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "ANSIBLE_CONFIG": str(cwd / "none.cfg"),
           "ANSIBLE_LOCAL_TEMP": str(cwd / ".ansible-tmp"), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
           "LC_ALL": "C.UTF-8"}
    done = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(source), "--list"], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def members(listed: dict[str, Any], group: str) -> set[str]:
    """Every host of ``group`` in Ansible's answer, its children's included."""
    entry = listed.get(group) or {}
    found = set(entry.get("hosts") or [])
    for child in entry.get("children") or []:
        found |= members(listed, child)
    return found


def comparable(host: HostConfig) -> dict[str, Any]:
    """A host's settings, but for where they were written (a file:line vs. the JSON), its groups as a set
    (their order follows ansible_group_priority, which the JSON does not carry: it is already applied)."""
    values = {f.name: getattr(host, f.name) for f in fields(host) if f.name != "source"}
    values["groups"] = frozenset(host.groups)
    return values


def compare(source: Path, cwd: Path) -> tuple[Inventory, dict[str, Any]]:
    listed = ansible_list(source, cwd)
    ours = load_inventory(source, environ=ENVIRON)
    hostvars = listed["_meta"]["hostvars"]
    every = members(listed, "all") | set(hostvars)
    windows = {name for name in every if str(hostvars.get(name, {}).get("ansible_connection")) in WINDOWS}
    by_name = {host.name: host for host in ours.hosts}
    assert set(by_name) == windows, "Windows hosts differ from Ansible's"
    assert set(ours.left_out) == every - windows, "left-out hosts differ from Ansible's"
    for name, host in by_name.items():
        seen = hostvars[name]
        assert host.address == seen.get("ansible_host", name), name
        assert host.username == seen.get("ansible_user"), name
        if "ansible_port" in seen:
            assert host.port == seen["ansible_port"], name
    for group in ours.groups:
        assert set(ours.groups[group]) == members(listed, group) & windows, group
    # the same inventory, read through Ansible's JSON of it: every setting equal
    dumped = cwd / "listed.json"
    dumped.write_text(json.dumps(listed), encoding="utf-8")
    theirs = {host.name: comparable(host) for host in load_inventory(dumped, environ=ENVIRON).hosts}
    assert {host.name: comparable(host) for host in ours.hosts} == theirs
    return ours, listed


@pytest.mark.parametrize("source", ["hosts.yml", "hosts.ini", "."])
def test_the_shipped_ansible_inventories_read_as_ansible_reads_them(source: str, tmp_path: Path) -> None:
    folder = REPO / "inventory" / "ansible"
    before = sorted(p.name for p in folder.rglob("*"))
    ours, _ = compare(folder / source, tmp_path)  # Ansible's home, temp files and its JSON go to tmp_path
    assert sorted(p.name for p in folder.rglob("*")) == before  # the shipped folder is left as it was
    assert "build01" in ours.left_out and "web04" in {h.name for h in ours.hosts}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_inventory_shapes_read_as_ansible_reads_them(shape: str, tmp_path: Path) -> None:
    for name, text in SHAPES[shape].items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    main = next(tmp_path / name for name in SHAPES[shape] if name.startswith("hosts."))
    ours, listed = compare(main, tmp_path)
    hosts = {host.name: host for host in ours.hosts}
    if shape == "two-groups-conflicting-vars":  # alpha's priority 10 puts it after zulu and mid: alpha wins
        assert (hosts["shared01"].max_reboots, hosts["shared01"].port) == (1, 1000)
        assert listed["_meta"]["hostvars"]["shared01"]["wuremote_max_reboots"] == 1
    if shape == "mixed-linux-windows":
        assert hosts["win02"].scheme == "http"  # port 5985 without a scheme
    if shape == "vault-encrypted-password":
        assert all(h.password is not None and h.password.reveal() == SECRET for h in ours.hosts)
        assert any("vault" in w for w in ours.warnings)
    if shape == "ini-backslash-and-transport-list":
        assert (hosts["w1"].username, hosts["w2"].username) == ("CORPdbadmin", "CORP\\dbadmin")
        assert hosts["w1"].auth == "ntlm" and any(": a backslash" in w for w in ours.warnings)
    if shape == "letter-ranges":
        assert sorted(hosts) == sorted([f"rack-{r}-node{n}" for r in "abc" for n in (1, 2)]
                                       + ["web01", "web04", "web07", "web10"])
