"""Inventories: every format, precedence, ranges, errors naming file:line and the fix, passwords, --limit."""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from conftest import OPERATION_TIMEOUT, READ_TIMEOUT
from pypsrp.client import Client

from wuremote.inventory import (
    HostConfig,
    Inventory,
    InventoryError,
    host_snapshot,
    hosts_from_names,
    hosts_from_snapshot,
    load_inventory,
    select,
)
from wuremote.lab.lab import Lab

REPO = Path(__file__).resolve().parent.parent
SECRET = "Sup3r-s3cret!"  # must never appear in any repr, str or message


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, **kwargs: Any) -> Inventory:
    kwargs.setdefault("environ", {})
    return load_inventory(path, **kwargs)


def by_name(inventory: Inventory) -> dict[str, HostConfig]:
    return {host.name: host for host in inventory.hosts}


def error_of(path: Path, **kwargs: Any) -> str:
    with pytest.raises(InventoryError) as caught:
        load(path, **kwargs)
    return str(caught.value)


# --- native TOML -------------------------------------------------------------------------------
def test_lab_inventory_reaches_the_lab_with_pypsrp(lab: Lab, tmp_path: Path) -> None:
    """The inventory `wuremote lab` writes loads into configs a real client can connect with."""
    inventory = load(write(tmp_path, "lab.toml", lab.inventory_toml()))
    assert [h.name for h in inventory.hosts] == [e.name for e in lab.endpoints]
    host = inventory.hosts[0]
    assert (host.transport, host.auth, host.scheme, host.effective_port) == ("psrp", "basic", "https", lab.endpoints[0].port)
    client = Client(host.address, port=host.effective_port, username=host.username, password=host.password.reveal(),
                    ssl=True, auth=host.auth, cert_validation=host.ca_file, operation_timeout=OPERATION_TIMEOUT,
                    read_timeout=READ_TIMEOUT, connection_timeout=5, reconnection_retries=0)
    output, _, had_errors = client.execute_ps("hostname")
    assert not had_errors and output.strip() == host.name
    assert any("plaintext password" in w and str(tmp_path / "lab.toml") in w for w in inventory.warnings)


def test_toml_precedence_vars_then_parents_then_children_then_host(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.toml", """
[vars]
max_reboots = 1
site = "top"
reboot = "never"
dism_source = "top"

[hosts."h1"]
max_reboots = 9

[hosts."h2"]

[groups.parent]
children = ["child"]
vars = { site = "parent", reboot = "allowed", dism_source = "parent" }

[groups.child]
hosts = ["h1", "h2"]
[groups.child.vars]
site = "child"

[groups.alpha]
hosts = ["h2"]
vars = { dism_source = "alpha" }
""")
    hosts = by_name(load(path))
    assert (hosts["h1"].max_reboots, hosts["h1"].site, hosts["h1"].reboot) == (9, "child", "allowed")
    assert hosts["h2"].max_reboots == 1
    # alpha and parent are both roots: alphabetical, so parent's value comes after alpha's
    assert hosts["h2"].dism_source == "parent"
    assert hosts["h2"].groups == ("alpha", "parent", "child")


def test_toml_defaults_address_and_port_by_scheme(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.toml", '[hosts."a"]\n[hosts."b"]\nscheme = "http"\nauth = "ntlm"\n')
    hosts = by_name(load(path))
    assert (hosts["a"].address, hosts["a"].effective_port) == ("a", 5986)
    assert hosts["b"].effective_port == 5985
    assert hosts["a"].source == f"{path}:1" and hosts["b"].source == f"{path}:2"


def test_toml_children_and_group_members(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.toml", """
[groups.all_servers]
children = ["web", "db"]
[groups.web]
hosts = ["web[01:03]"]
[groups.db]
hosts = ["db1"]
""")
    inventory = load(path)
    assert inventory.groups["all_servers"] == ["web01", "web02", "web03", "db1"]
    assert by_name(inventory)["db1"].groups == ("all_servers", "db")


def test_toml_relative_ca_file_is_beside_the_inventory(tmp_path: Path) -> None:
    path = write(tmp_path, "sub/inv.toml", '[vars]\nca_file = "certs/ca.pem"\n[hosts."a"]\n')
    assert load(path).hosts[0].ca_file == str(tmp_path / "sub" / "certs" / "ca.pem")


def test_every_var_of_the_example_toml(tmp_path: Path) -> None:
    inventory = load(REPO / "inventory" / "example.toml", environ={"WUREMOTE_CORP_PASSWORD": SECRET})
    hosts = by_name(inventory)
    assert hosts["app02"].kb == "KB5034441" and hosts["app02"].effective_port == 15986
    assert hosts["dc01"].opt_in == () and hosts["app01"].opt_in == ("av-pause",)
    assert hosts["dc01"].maintenance_window == "Sat 01:00-05:00"
    assert hosts["web03"].reboot_group_cap == 2 and hosts["web03"].site == "Paris"
    assert hosts["legacy01"].transport == "winrm" and hosts["legacy01"].effective_port == 5985
    assert hosts["app01"].vendor_av["pause_arguments"] == ["--pause"]
    assert hosts["app01"].step_options == {"cleanup": {"ResetBase": True}}
    assert all(h.password.reveal() == SECRET for h in inventory.hosts)
    assert inventory.warnings == []


# --- ranges ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, names", [
    ("web[01:20]", [f"web{i:02d}" for i in range(1, 21)]),
    ("web[1:3]", ["web1", "web2", "web3"]),
    ("db-[a:c]", ["db-a", "db-b", "db-c"]),
    ("n[01:10:2]", ["n01", "n03", "n05", "n07", "n09"]),
    ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
])
def test_host_ranges(tmp_path: Path, pattern: str, names: list[str]) -> None:
    inventory = load(write(tmp_path, "inv.toml", f'[groups.g]\nhosts = ["{pattern}"]\n'))
    assert [h.name for h in inventory.hosts] == names


@pytest.mark.parametrize("pattern, problem", [
    ("web[01:100]", "same number of digits"),
    ("web[5:1]", "start is after the end"),
    ("web[1:a]", "both numbers or both single letters"),
    ("web[1:5:0]", "step"),
    ("web[1:\u00b2]", "both numbers or both single letters"),  # a digit int() refuses: an error, not a crash
    ("web[1:" + "9" * 5000 + "]", "both numbers or both single letters"),
])
def test_bad_ranges(tmp_path: Path, pattern: str, problem: str) -> None:
    path = write(tmp_path, "inv.toml", f'[groups.g]\nhosts = ["{pattern}"]\n')
    message = error_of(path)
    assert message.startswith(f"{path}:2: host range") and problem in message and "NAME[START:END]" in message


@pytest.mark.parametrize("pattern", [
    "h[1:400]x[1:400]",  # 160,000 names
    "h[1:3000]x[1:3000]",  # 9,000,000 names, each range well under the limit
    "a[1:50]b[1:50]c[a:z]d[1:2]",  # 130,000 names
])
def test_range_limit_counts_every_name_the_pattern_makes(tmp_path: Path, pattern: str) -> None:
    """MAX_RANGE bounds the product of a pattern's ranges, and is checked before any name is made."""
    path = write(tmp_path, "inv.toml", f'[groups.g]\nhosts = ["{pattern}"]\n')
    tracemalloc.start()
    try:
        message = error_of(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == (f"{path}:2: host range {pattern!r} expands to more than 100,000 host names; "
                       "narrow its bounds or split it into smaller ranges")
    assert peak < 4_000_000, peak  # no list of names was built


def test_range_limit_allows_a_product_under_it(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.toml", '[groups.g]\nhosts = ["a[1:50]b[1:50]c[a:z]"]\n')  # 65,000 names
    hosts = load(path).hosts
    assert len(hosts) == 65_000 and (hosts[0].name, hosts[-1].name) == ("a1b1ca", "a50b50cz")


# --- CSV ---------------------------------------------------------------------------------------
def test_csv_hosts_groups_and_typed_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.csv", "\ufeffname,address,port,groups,opt_in,cert_validation\n"
                 "# a comment row\n"
                 "a,10.0.0.1,5999,web;prod,\"av-pause,clean-boot\",false\n"
                 "b[1:2],,,prod,,\n")
    inventory = load(path)
    hosts = by_name(inventory)
    assert (hosts["a"].address, hosts["a"].port, hosts["a"].cert_validation) == ("10.0.0.1", 5999, False)
    assert hosts["a"].opt_in == ("av-pause", "clean-boot")
    assert hosts["b2"].address == "b2" and hosts["b2"].source == f"{path}:4"
    assert inventory.groups == {"web": ["a"], "prod": ["a", "b1", "b2"]}


def test_csv_example_loads() -> None:
    hosts = by_name(load(REPO / "inventory" / "example.csv", environ={"WUREMOTE_CORP_PASSWORD": SECRET}))
    assert hosts["dc01"].auth == "kerberos" and hosts["dc01"].reboot == "window"
    assert hosts["web04"].groups == ("servers", "web")


# --- Ansible YAML ------------------------------------------------------------------------------
ANSIBLE_YAML = """
all:
  vars:
    ansible_user: admin
    ansible_connection: psrp
  hosts:
    solo:
  children:
    windows:
      vars:
        ansible_psrp_protocol: http
        ansible_psrp_auth: ntlm
        wuremote_max_reboots: 1
      children:
        web:
          hosts:
            web[01:03]:
              ansible_port: 15985
        legacy:
          hosts:
            old1:
              ansible_host: 10.1.1.1
              ansible_connection: winrm
              ansible_winrm_transport: [ntlm, kerberos]
              ansible_winrm_server_cert_validation: ignore
    linux:
      hosts:
        tux1:
        tux2:
      vars:
        ansible_connection: ssh
"""


def test_ansible_yaml_groups_children_and_vars(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", ANSIBLE_YAML)
    inventory = load(path)
    hosts = by_name(inventory)
    assert list(hosts) == ["solo", "web01", "web02", "web03", "old1"]
    web = hosts["web02"]
    assert (web.transport, web.scheme, web.auth, web.port, web.username, web.max_reboots) == \
        ("psrp", "http", "ntlm", 15985, "admin", 1)
    assert web.groups == ("windows", "web")
    old = hosts["old1"]
    # ansible_psrp_* vars are for psrp hosts only: the winrm host keeps https and its own transport
    assert (old.address, old.transport, old.auth, old.scheme, old.cert_validation) == \
        ("10.1.1.1", "winrm", "ntlm", "https", False)
    assert hosts["solo"].groups == () and inventory.groups["windows"] == ["web01", "web02", "web03", "old1"]


def test_ansible_non_windows_hosts_are_left_out_and_named(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", ANSIBLE_YAML)
    inventory = load(path)
    assert set(inventory.left_out) == {"tux1", "tux2"}
    assert inventory.left_out["tux1"] == (f"{path}:31: ansible_connection is not winrm or psrp; "
                                          "wuremote repairs Windows hosts only")
    assert any(w.startswith(f"{path}:31: left out 2 host(s)") and "tux1, tux2" in w for w in inventory.warnings)
    with pytest.raises(InventoryError, match=r"'tux1' names only hosts wuremote leaves out \(1: .*ansible_connection is not winrm or psrp"):
        select(inventory, "tux1")


def test_group_vars_and_host_vars_beside_the_inventory(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", """
all:
  vars:
    ansible_connection: psrp
    wuremote_site: inventory-all
  children:
    web:
      vars:
        wuremote_dism_source: inventory-web
      hosts:
        web1:
          wuremote_kb: KB1234567
        web2:
""")
    write(tmp_path, "group_vars/all.yml", "wuremote_site: file-all\nwuremote_reboot: never\n")
    write(tmp_path, "group_vars/web/a.yaml", "wuremote_max_reboots: 5\n")
    write(tmp_path, "group_vars/web/b.yml", "wuremote_max_reboots: 6\nwuremote_opt_in: [clean-boot]\n")
    write(tmp_path, "group_vars/nogroup.yml", "wuremote_kb: not-a-kb-but-unused\n")
    write(tmp_path, "host_vars/web1", "wuremote_kb: KB7654321\n")
    hosts = by_name(load(path))
    assert (hosts["web1"].site, hosts["web1"].reboot, hosts["web1"].max_reboots) == ("file-all", "never", 6)
    assert hosts["web2"].opt_in == ("clean-boot",) and hosts["web2"].dism_source == "inventory-web"
    assert (hosts["web1"].kb, hosts["web2"].kb) == ("KB7654321", None)


def test_group_vars_file_beats_inventory_group_vars_as_in_ansible(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", "web:\n  hosts:\n    w1:\n  vars:\n    ansible_port: 1111\n    ansible_connection: psrp\n")
    write(tmp_path, "group_vars/all.yaml", "ansible_port: 2222\n")
    assert load(path).hosts[0].port == 2222


def test_ansible_yaml_merge_keys_and_unsafe(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yaml", """
defaults: &defaults
  vars: {ansible_port: 6000, ansible_connection: psrp}
web:
  <<: *defaults
  hosts:
    w1: {ansible_user: !unsafe '{{ not_templated }}'}
""")
    hosts = by_name(load(path))
    assert hosts["w1"].port == 6000 and hosts["w1"].username == "{{ not_templated }}"


def test_ansible_examples_yaml_and_ini_agree() -> None:
    environ = {"WUREMOTE_CORP_PASSWORD": SECRET}
    from_yaml = by_name(load(REPO / "inventory" / "ansible" / "hosts.yml", environ=environ))
    from_ini = by_name(load(REPO / "inventory" / "ansible" / "hosts.ini", environ=environ))
    assert sorted(from_yaml) == sorted(from_ini)
    for name, host in from_yaml.items():
        other = from_ini[name]
        assert (host.address, host.transport, host.auth, host.effective_port, host.groups, host.kb, host.opt_in,
                host.reboot) == (other.address, other.transport, other.auth, other.effective_port, other.groups,
                                 other.kb, other.opt_in, other.reboot), name
    assert from_yaml["web01"].kb == "KB5034441" and from_yaml["legacy01"].transport == "winrm"


# --- Ansible INI -------------------------------------------------------------------------------
def test_ansible_ini_sections_children_vars_ranges(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts", """
# ungrouped first
solo ansible_host=10.0.0.9

[web]
web[1:2]:5999 ansible_user="CORP\\\\web admin"  # trailing comment
dbx ansible_winrm_transport=credssp ansible_connection=winrm

[web:vars]
ansible_psrp_cert_validation=ignore
wuremote_exclude_services=SvcA,SvcB

[servers:children]
web

[all:vars]
ansible_connection=psrp
ansible_psrp_message_encryption=never
ansible_psrp_auth=basic
ansible_psrp_protocol=http
""")
    inventory = load(path)
    hosts = by_name(inventory)
    assert hosts["solo"].address == "10.0.0.9" and hosts["solo"].source == f"{path}:3"
    web2 = hosts["web2"]
    assert (web2.port, web2.username, web2.cert_validation, web2.exclude_services) == \
        (5999, "CORP\\web admin", False, ("SvcA", "SvcB"))
    # message_encryption never is Ansible's way of allowing basic over http
    assert (web2.auth, web2.scheme, web2.allow_unencrypted_basic) == ("basic", "http", True)
    assert (hosts["dbx"].transport, hosts["dbx"].auth, hosts["dbx"].cert_validation) == ("winrm", "credssp", True)
    assert inventory.groups["servers"] == ["web1", "web2", "dbx"]


# --- errors: each names the file, the line and the fix ---------------------------------------
ERRORS = [
    ("inv.toml", '[hosts."a"]\ntransport = "ssh"\n', 2, ["transport must be one of psrp, winrm"]),
    ("inv.toml", '[hosts."a"]\nauth = "digest"\n', 2, ["auth must be one of basic, ntlm"]),
    ("inv.toml", '[vars]\nscheme = "ftp"\n[hosts."a"]\n', 2, ["scheme must be one of https, http"]),
    ("inv.toml", '[hosts."a"]\nreboot = "sometimes"\n', 2, ["reboot must be one of never, allowed, window"]),
    ("inv.toml", '[hosts."a"]\nport = 70000\n', 2, ["port must be a whole number from 1 to 65535"]),
    ("inv.toml", '[hosts."a"]\n\nport = 0\n', 3, ["port must be a whole number from 1 to 65535"]),
    ("inv.toml", '[hosts."a"]\nkb = "5034441"\n', 2, ["kb is not a KB id", "KB followed by 6 to 8 digits"]),
    ("inv.toml", '[hosts."a"]\nopt_in = ["av-pause", "reformat"]\n', 2,
     ["opt_in item 2 is not one of av-pause, clean-boot"]),
    ("inv.toml", '[hosts."a"]\nprot = 5986\n', 2, ["unknown var 'prot' (did you mean 'port'?)", "known vars: address"]),
    ("inv.toml", '[host."a"]\n', 1, ["unknown table 'host' (did you mean 'hosts'?)"]),
    ("inv.toml", '[hosts."web01"]\n[hosts."WEB01"]\n', 2, ["'WEB01' is already defined as 'web01' at", "keep one"]),
    ("inv.toml", '[hosts."a"]\n[groups.x]\nchildren = ["y"]\n[groups.y]\nchildren = ["x"]\n', 2,
     ["group cycle x -> y -> x", "remove one of those children"]),
    ("inv.toml", '[groups.x]\nhosts = ["a"]\nchildren = ["nope"]\n', 3,
     ["names child group 'nope', which is not defined", "define that group or remove it"]),
    ("inv.toml", '[vars]\nauth = "basic"\nscheme = "http"\n[hosts."a"]\n', 4,
     ["host a: auth basic over scheme http", "use scheme https, or set allow_unencrypted_basic = true"]),
    ("inv.toml", '[hosts."a"]\nreboot = "window"\n', 1, ["reboot window needs maintenance_window"]),
    ("inv.toml", '[hosts."a"]\nmaintenance_window = "weekends"\n', 2, ["DAYS HH:MM-HH:MM"]),
    ("inv.toml", '[hosts."a"]\nauth = "certificate"\n', 1, ["auth certificate needs scheme https, cert_pem and cert_key_pem"]),
    ("inv.toml", '[hosts."a"]\nvendor_av = { pause_command = "C:\\\\av.exe" }\n', 2,
     ["vendor_av needs both pause_command and resume_command"]),
    ("inv.toml", '[hosts."a"]\nvendor_av = { pause_command = "av.exe", resume_command = "av.exe" }\n', 2,
     ["pause_command must be the executable's full Windows path"]),
    ("inv.toml", '[hosts."a"]\nport = \n', 2, ["fix the TOML syntax"]),
    ("inv.csv", "address,port\n", 1, ["no 'name' column", "name, then var names"]),
    ("inv.csv", "name,adress\na,b\n", 1, ["unknown column 'adress' (did you mean 'address'?)"]),
    ("inv.csv", "name,port\na,5986\nb,x\n", 3, ["port must be a whole number from 1 to 65535"]),
    ("inv.csv", "name,port\na,\u00b2\n", 2, ["port must be a whole number from 1 to 65535"]),
    ("inv.csv", "name\na\nb\na\n", 4, ["host 'a' is already defined at", "one row per host"]),
    ("inv.csv", "name,port\na,1,2\n", 2, ["3 cells but 2 columns", "quote cells"]),
    ("hosts.yml", "web:\n  hosts:\n    a:\n      ansible_connection: psrp\n      ansible_user: u\n"
                  "      ansible_password: !vault |\n        $ANSIBLE_VAULT;1.1;AES256\n", 6,
     ["ansible vault value for ansible_password: wuremote does not decrypt vault",
      "set password_env/WUREMOTE_PASSWORD or enter it at the prompt"]),
    ("hosts.yml", "web:\n  hosts:\n    a:\n      wuremote_reeboot: never\n", 4,
     ["unknown var 'wuremote_reeboot' (did you mean 'wuremote_reboot'?)"]),
    ("hosts.yml", "web:\n  hostz:\n    a:\n", 2, ["unknown group key 'hostz'"]),
    ("hosts.yml", "web:\n  hosts:\n    a:\n      ansible_winrm_transport: digest\n", 4,
     ["ansible_winrm_transport must be one of basic"]),
    ("hosts.yml", "web:\n  hosts:\n    a:\n      ansible_connection: psrp\n      ansible_psrp_protocol: http\n"
                  "      ansible_psrp_auth: basic\n", 3,
     ["auth basic over scheme http", "wuremote_allow_unencrypted_basic: true"]),
    ("hosts.yml", "web:\n  hosts: [a, b]\n", 2, ["web's hosts must be a mapping of names"]),
    ("hosts.yml", "web:\n  hosts:\n    a:\n  vars: {x: [1, 2}\n", 4, ["fix the YAML syntax"]),
    ("hosts.ini", "[web]\na\n[db:vars]\nansible_port=1\n", 3, ["group 'db' is used but never defined", "add a [db]"]),
    ("hosts.ini", "[web:children]\ndb\n", 2, ["group 'db' is used but never defined"]),
    ("hosts.ini", "[web:hostvars]\na\n", 1, ["unknown section kind 'hostvars'"]),
    ("hosts.ini", "[web]\na ansible_port=99999\n", 2, ["ansible_port must be a whole number from 1 to 65535"]),
    ("hosts.ini", "[web]\na ansible_connection\n", 2, ["expected NAME=VALUE after the host name; word 2 has no"]),
    ("hosts.ini", "[web]\na ansible_user='unclosed\n", 2, ["unbalanced quotes", "close the quote"]),
]


@pytest.mark.parametrize("name, text, line, parts", ERRORS, ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)])
def test_errors_name_file_line_and_fix(tmp_path: Path, name: str, text: str, line: int, parts: list[str]) -> None:
    path = write(tmp_path, name, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}: "), message
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_vault_encrypted_vars_file(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", "web:\n  hosts:\n    a:\n")
    secret_file = write(tmp_path, "group_vars/web.yml", "$ANSIBLE_VAULT;1.1;AES256\n6231336134\n")
    assert error_of(path).startswith(f"{secret_file}:1: this file is ansible-vault encrypted; wuremote does not decrypt")


def test_inventory_without_hosts(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.toml", "[vars]\n")
    assert error_of(path) == f"{path}: no hosts to repair; define at least one Windows host"


def test_unreadable_and_unknown_format(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert error_of(missing) == f"{missing}: cannot read the inventory (No such file or directory); check the path"
    odd = write(tmp_path, "hosts.txt", "a\n")
    message = error_of(odd)
    assert message.startswith(f"{odd}: unknown inventory format '.txt'; use .toml, .csv, .yml/.yaml")


# --- passwords ---------------------------------------------------------------------------------
def test_password_env_then_wuremote_password_then_prompt(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.toml", """
[vars]
username = "admin"
[hosts."named"]
password_env = "MY_PW"
[hosts."a"]
[hosts."b"]
[hosts."other"]
username = "root"
[hosts."kerb"]
username = "svc"
auth = "kerberos"
""")
    asked: list[str] = []

    def prompt(username: str) -> str:
        asked.append(username)
        return SECRET + username

    hosts = by_name(load(path, environ={"MY_PW": "from-my-pw"}, prompt=prompt))
    assert hosts["named"].password.reveal() == "from-my-pw"
    assert asked == ["admin", "root"]  # once per distinct username
    assert hosts["a"].password is hosts["b"].password and hosts["a"].password.reveal() == SECRET + asked[0]
    assert hosts["kerb"].password is None  # kerberos uses the ticket cache: nothing asked
    everywhere = by_name(load(path, environ={"MY_PW": "x", "WUREMOTE_PASSWORD": SECRET}, prompt=prompt))
    assert everywhere["a"].password.reveal() == SECRET and everywhere["kerb"].password.reveal() == SECRET
    assert len(asked) == 2
    assert by_name(load(path, environ={"MY_PW": "x"}))["a"].password is None  # no prompt given: None


def test_password_env_not_set_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.toml", '[vars]\npassword_env = "MISSING_PW"\n[hosts."a"]\n')
    assert error_of(path) == (f"{path}:2: password_env names MISSING_PW, which is not set; "
                              "export it before running wuremote")


def test_plaintext_password_warns_naming_the_file_and_never_shows(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", "web:\n  hosts:\n    a:\n    b:\n")
    vars_file = write(tmp_path, "group_vars/web.yml", f"ansible_password: '{SECRET}'\nansible_connection: psrp\n")
    inventory = load(path)
    assert all(h.password.reveal() == SECRET for h in inventory.hosts)
    assert len(inventory.warnings) == 1 and inventory.warnings[0].startswith(f"{vars_file}:1: a plaintext password")
    assert "password_env" in inventory.warnings[0]
    for text in (repr(inventory), str(inventory), repr(inventory.hosts[0]), str(inventory.hosts[0]),
                 f"{inventory.hosts[0]}", " ".join(inventory.warnings)):
        assert SECRET not in text


@pytest.mark.parametrize("name, text", [
    ("hosts.yml", f"web:\n  hosts:\n    a:\n      ansible_password: '{SECRET}'\n  vars: [\n"),
    ("hosts.ini", f"[web]\na ansible_password={SECRET} ansible_port=0\n"),
    ("hosts.ini", f"[web]\na ansible_password='{SECRET}\n"),
    ("hosts.ini", f"[web]\na ansible_password= {SECRET}\n"),
    ("inv.csv", f"name,password,port\na,{SECRET},0\n"),
    ("inv.toml", f'[hosts."a"]\npassword = "{SECRET}"\nauth = "basic"\nscheme = "http"\n'),
    ("inv.toml", f'[hosts."a"]\npassword = ["{SECRET}"]\n'),
])
def test_errors_never_show_the_password(tmp_path: Path, name: str, text: str) -> None:
    message = error_of(write(tmp_path, name, text))
    assert SECRET not in message and re.match(r".+:\d+: ", message)


MISPLACED = [("inv.csv", f"name,{column},password\na,{SECRET},\n", column)
             for column in ("port", "transport", "scheme", "auth", "cert_validation", "allow_unencrypted_basic",
                            "reboot", "maintenance_window", "reboot_group_cap", "allow_reboot_roles", "max_reboots",
                            "opt_in", "kb", "kb_sha256", "vendor_av", "step_options")] + [
    ("hosts.ini", f"[web]\na ansible_port={SECRET}\n", "ansible_port"),
    ("hosts.ini", f"[web]\na ansible_winrm_transport={SECRET}\n", "ansible_winrm_transport"),
    ("hosts.yml", f"web:\n  hosts:\n    a:\n      ansible_connection: {SECRET}\n", "ansible_connection"),
]


@pytest.mark.parametrize("name, text, column", MISPLACED, ids=[m[2] for m in MISPLACED])
def test_a_password_in_the_wrong_column_is_never_echoed(tmp_path: Path, name: str, text: str, column: str) -> None:
    """A misaligned CSV row (or a slip in an Ansible line) puts a password where a port or choice goes:
    the error names the line and the var and says what is expected, never the value."""
    path = write(tmp_path, name, text)
    message = error_of(path)
    assert SECRET.lower() not in message.lower(), message
    assert re.match(rf"{re.escape(str(path))}:\d+: ", message) or message.startswith(f"{path}: no hosts"), message
    assert column in message


def test_command_line_hosts_take_defaults_but_never_a_password() -> None:
    inventory = hosts_from_names(["web[1:2]", "db1"], {"transport": "winrm", "port": 5999, "username": None},
                                 environ={"WUREMOTE_PASSWORD": SECRET})
    assert [(h.name, h.transport, h.port, h.source) for h in inventory.hosts] == [
        ("web1", "winrm", 5999, "command line"), ("web2", "winrm", 5999, "command line"),
        ("db1", "winrm", 5999, "command line")]
    assert inventory.hosts[0].password.reveal() == SECRET
    with pytest.raises(InventoryError, match="^command line: a password is never taken from the command line"):
        hosts_from_names(["a"], {"password": SECRET})
    with pytest.raises(InventoryError, match="^command line: host 'a' is named twice"):
        hosts_from_names(["a", "a"], {})
    with pytest.raises(InventoryError, match=r"^command line: unknown var 'transprt' \(did you mean 'transport'\?\)"):
        hosts_from_names(["a"], {"transprt": "psrp"})


def test_resume_rebuilds_hosts_from_the_journal_snapshot(tmp_path: Path) -> None:
    """What the runner records (every field but the password, as JSON) comes back as the same hosts."""
    inventory = load(REPO / "inventory" / "example.toml", environ={"WUREMOTE_CORP_PASSWORD": SECRET})
    snapshot = json.loads(json.dumps([host_snapshot(h) for h in inventory.hosts]))
    assert SECRET not in json.dumps(snapshot)
    rebuilt = hosts_from_snapshot(snapshot, environ={"WUREMOTE_CORP_PASSWORD": SECRET})
    assert rebuilt == inventory.hosts
    snapshot[0]["port"] = 0
    with pytest.raises(InventoryError, match=r"example\.toml:\d+: port must be a whole number from 1 to 65535"):
        hosts_from_snapshot(snapshot, environ={"WUREMOTE_CORP_PASSWORD": SECRET})


# --- --limit -----------------------------------------------------------------------------------
@pytest.fixture
def fleet(tmp_path: Path) -> Inventory:
    return load(write(tmp_path, "inv.toml", """
[groups.web]
hosts = ["web[01:04]"]
[groups.db]
hosts = ["db1", "db2"]
[groups.prod]
hosts = ["web01", "web02", "db1"]
[groups.dcs]
hosts = ["DC01"]
"""))


@pytest.mark.parametrize("pattern, names", [
    ("all", ["web01", "web02", "web03", "web04", "db1", "db2", "DC01"]),
    ("web", ["web01", "web02", "web03", "web04"]),
    ("web0[12],db*", ["web01", "web02", "db1", "db2"]),
    ("web,!web03", ["web01", "web02", "web04"]),
    ("!web", ["db1", "db2", "DC01"]),
    ("web,&prod", ["web01", "web02"]),
    ("dc01", ["DC01"]),
    ("WEB*, db2", ["web01", "web02", "web03", "web04", "db2"]),
])
def test_limit_selects_like_ansible(fleet: Inventory, pattern: str, names: list[str]) -> None:
    assert [h.name for h in select(fleet, pattern)] == names


@pytest.mark.parametrize("pattern", ["webb", "web,!db3", ""])
def test_limit_that_matches_nothing_is_an_error(fleet: Inventory, pattern: str) -> None:
    with pytest.raises(InventoryError, match=r"^--limit") as caught:
        select(fleet, pattern)
    assert "groups: web, db, prod, dcs" in str(caught.value) or "empty" in str(caught.value)
