"""The HRESULT table: lookups a report relies on, and agreement with the scripts that classify on the host."""

from __future__ import annotations

import dataclasses
import re

import pytest

from wuremote.contract.hresult import CATEGORIES, KNOWN, NOT_A_REPAIR_STEP, HResult, codes_in, describe, lookup, normalize
from wuremote.contract.scripts import load_scripts

ISSUE_CODES = [
    0x80070002, 0x80070003, 0x80070005, 0x8024402C, 0x80244022, 0x80240034, 0x8024002E,
    0x80073712, 0x800F081F, 0x800F0906, 0x800705B4, 0x80072EE2,
]


@pytest.mark.parametrize("code", ISSUE_CODES, ids=lambda c: f"0x{c:08X}")
def test_every_code_the_issue_names_is_known_with_meaning_and_fix(code: int):
    record = lookup(code)
    assert record is not None
    assert record.meaning and record.fix and record.name.isupper()


@pytest.mark.parametrize("value", [0x80070002, -2147024894, "0x80070002", "0X80070002", "80070002", " 0x80070002 ", "-2147024894"])
def test_lookup_accepts_every_spelling(value):
    assert lookup(value).name == "ERROR_FILE_NOT_FOUND"


def test_signed_and_hex_forms_round_trip():
    record = lookup("0x800F081F")
    assert record.hex == "0x800F081F"
    assert record.signed == -2146498529
    assert lookup(record.signed) is record


def test_unknown_code_is_none_but_described():
    assert lookup(0x80001234) is None
    unknown = describe("0x80001234")
    assert unknown.category == "unknown" and unknown.hex == "0x80001234"


@pytest.mark.parametrize("bad", ["xyz", "0x1234567890", "", "0x", 1 << 32, -(1 << 31) - 1, 1.5, None, True])
def test_malformed_input_is_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        normalize(bad)


def test_network_proxy_wsus_codes_are_not_repair_steps():
    for code in (0x8024402C, 0x80244022, 0x80072EE2, 0x800705B4):
        record = lookup(code)
        assert record.category == "network" and not record.repairable and record.step is None
        assert "not a repair step" in record.category_text
    assert lookup(0x8024002E).category == "policy"


def test_repairable_codes_name_their_step():
    assert lookup(0x80070002).step == "reset-components"
    assert lookup(0x80073712).step == "dism"
    assert lookup(0x800F081F).category == "needs-source"
    assert "repair source" in lookup(0x800F081F).category_text
    for record in KNOWN:
        if record.repairable:
            assert record.step in load_scripts(), record


def test_records_are_frozen_and_unique():
    record = lookup(0x80070002)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.fix = "something else"  # type: ignore[misc]
    assert len({r.code for r in KNOWN}) == len(KNOWN)
    assert all(r.category in CATEGORIES for r in KNOWN)


def test_a_record_refuses_an_unknown_category():
    with pytest.raises(ValueError):
        HResult(0x80070002, "X", "m", "f", "miscellaneous")


def test_verify_script_classes_the_same_codes_as_not_a_repair_step():
    """verify.ps1 decides on the host whether a failure means 'cannot reach the update server'."""
    text = load_scripts()["verify"].text
    block = re.search(r"# wuremote-network-hresults: begin(.*?)# wuremote-network-hresults: end", text, re.S)
    assert block, "verify.ps1 lost its network HRESULT block"
    on_host = {int(h, 16) for h in re.findall(r"'(0x[0-9A-F]{8})'", block.group(1))}
    assert on_host == set().union(*(codes_in(c) for c in NOT_A_REPAIR_STEP))


def test_dism_script_reports_needs_source_for_the_needs_source_codes():
    text = load_scripts()["dism"].text
    on_host = {int(h, 16) for h in re.findall(r"'(0x800F0[0-9A-F]{3})' =", text)}
    assert on_host == codes_in("needs-source")


def test_codes_in_refuses_unknown_category():
    with pytest.raises(ValueError):
        codes_in("nope")
