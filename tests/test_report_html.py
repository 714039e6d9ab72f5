"""report.html from a real lab run, read back with the stdlib HTML parser as a browser would see it.

The run covers a healthy host, repairs (one with a reboot, one whose transcript name needs
percent-encoding), a WSUS outage with its HRESULT, and a host whose inventory name is markup.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.lab.lab import Lab
from wuremote.output.html import render_html

HOSTILE = "<script>alert(1)</script>"
SCENARIOS = ("healthy", "servicing-in-progress", "wsus-unreachable", "corrupt-download-cache", "clock-skew")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def iter(self, tag: str | None = None, cls: str | None = None):  # type: ignore[no-untyped-def]
        for child in self.children:
            if (tag is None or child.tag == tag) and (cls is None or cls in child.attrs.get("class", "").split()):
                yield child
            yield from child.iter(tag, cls)

    def all_text(self) -> str:
        return "".join(self.text) + "".join(c.all_text() for c in self.children)


class TreeBuilder(HTMLParser):
    """Just enough of a DOM: elements, attributes (entities decoded) and text, nested as the markup says."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>: the page's markup is broken"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].text.append(data)


def parse(page: str) -> Node:
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert [n.tag for n in builder.stack] == ["#document"], "elements left open at the end of the page"
    return builder.root


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, dict, Node]:
    """One real repair run against the lab; the first host carries a markup name into the report."""
    scenario_file = tmp_path_factory.mktemp("lab") / "fleet.toml"
    scenario_file.write_text("".join(f'[[hosts]]\nscenario = "{s}"\n' for s in SCENARIOS), encoding="utf-8")
    with Lab(scenario=scenario_file, time_scale=0.001) as lab:
        hosts = demo_hosts(lab)
        hosts[0] = replace(hosts[0], name=HOSTILE)
        summary = Runner(hosts, demo_options(tmp_path_factory.mktemp("state"))).run()
    report = json.loads(summary.report_json.read_text(encoding="utf-8"))
    page = (summary.run_dir / "report.html").read_text(encoding="utf-8")
    return summary.run_dir, report, parse(page)


def rows(doc: Node) -> list[Node]:
    return list(doc.iter("details", "host"))


def test_the_run_writes_report_html_with_every_host_once_in_run_order(real_run) -> None:
    run_dir, report, doc = real_run
    assert [row.attrs["data-name"] for row in rows(doc)] == list(report["hosts"])
    for row in rows(doc):
        host = report["hosts"][row.attrs["data-name"]]
        assert row.attrs["data-outcome"] == host["outcome"]
        assert row.attrs["data-cause"] == host["cause"]
        assert next(row.iter("span", "name")).all_text() == row.attrs["data-name"]
    outcomes = {h["outcome"] for h in report["hosts"].values()}
    assert {"healthy", "repaired", "needs-operator"} <= outcomes, "the run should cover these outcomes"


def test_fleet_counts_match_the_report(real_run) -> None:
    _, report, doc = real_run
    cards = {b.attrs["data-filter-outcome"]: int(b.attrs["data-count"]) for b in doc.iter("button", "count")}
    assert cards.pop("") == len(report["hosts"])
    assert {o: n for o, n in cards.items() if n} == report["run"]["counts"]
    assert cards["failed"] == report["run"]["counts"].get("failed", 0)  # "0 failed" is shown, not left out
    groups = {(tr.attrs["data-outcome"], next(tr.iter("button")).attrs["data-filter-cause"]): int(tr.attrs["data-hosts"])
              for tr in doc.iter("tr", "cause-group")}
    expected: dict[tuple[str, str], int] = {}
    for host in report["hosts"].values():
        expected[(host["outcome"], host["cause"])] = expected.get((host["outcome"], host["cause"]), 0) + 1
    assert groups == expected


def test_every_hresult_is_shown_with_its_meaning_and_fix(real_run) -> None:
    _, report, doc = real_run
    reported = {h["code"]: h for host in report["hosts"].values() for s in host["steps"] for h in s["hresults"]}
    assert "0x8024402C" in reported  # the WSUS outage
    table = next(t for t in doc.iter("table", "hresults"))
    shown = {cells[1].all_text(): [c.all_text() for c in cells] for tr in table.iter("tr")
             if len(cells := list(tr.iter("td"))) == 6}
    assert set(shown) == set(reported)
    for code, record in reported.items():
        assert record["name"] in shown[code] and record["meaning"] in shown[code] and record["fix"] in shown[code]


def test_transcript_links_open_the_files_from_the_run_dir(real_run) -> None:
    run_dir, report, doc = real_run
    links = [a.attrs["href"] for a in doc.iter("a", "transcript")]
    expected = [s["transcript"] for h in report["hosts"].values() for s in h["steps"] if s["transcript"]]
    assert len(links) == len(expected) and expected
    assert any("%" in name for name in expected), "the run should have a transcript name with a %XX in it"
    for href in links:
        assert not urlsplit(href).scheme and re.match(r"^transcripts/[^/]+/[^/]+\.log$", href), href
        assert (run_dir / unquote(href)).is_file(), f"{href} does not open a transcript"  # as a browser decodes it


def test_a_hostile_host_name_is_text_not_markup(real_run) -> None:
    _, report, doc = real_run
    assert HOSTILE in report["hosts"]
    scripts = list(doc.iter("script"))
    assert len(scripts) == 1 and "src" not in scripts[0].attrs, "only the page's own script"
    assert "alert(1)" not in scripts[0].all_text()
    row = rows(doc)[0]
    assert next(row.iter("span", "name")).all_text() == HOSTILE
    assert HOSTILE in row.attrs["data-search"]  # the filter box finds it by its literal name


def test_the_page_loads_nothing_and_only_its_own_script_may_run(real_run) -> None:
    _, _, doc = real_run
    for node in doc.iter():
        assert node.tag not in ("link", "img", "iframe", "object", "embed"), f"<{node.tag}> fetches a resource"
        assert "src" not in node.attrs, f"<{node.tag} src=...>"
        if "href" in node.attrs:
            assert not urlsplit(node.attrs["href"]).scheme and not node.attrs["href"].startswith("//"), node.attrs
    style = next(doc.iter("style")).all_text()
    assert "url(" not in style and "@import" not in style
    policy = next(m for m in doc.iter("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy").attrs["content"]
    script = next(doc.iter("script")).all_text()
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    assert "default-src 'none'" in policy
    assert f"script-src 'sha256-{digest}'" in policy, "the filter and sort script would be blocked by the page's own policy"


def test_each_host_has_a_timeline_of_its_steps_and_reboots(real_run) -> None:
    _, report, doc = real_run
    for row in rows(doc):
        host = report["hosts"][row.attrs["data-name"]]
        segments = list(next(row.iter("span", "bar")).iter("i"))
        reboots = [s for s in segments if "s-reboot" in s.attrs["class"]]
        assert len(segments) == len(host["steps"]) + len(host["reboot_log"])
        assert len(reboots) == host["reboots"]
        for segment in segments:
            left, width = map(float, re.findall(r"[\d.]+(?=%)", segment.attrs["style"]))
            assert left >= 0 and width > 0 and left + width <= 100.001
    assert any(h["reboots"] for h in report["hosts"].values()), "the run should include a reboot"


def test_a_run_that_never_finished_says_so_and_marks_the_step_in_flight(real_run) -> None:
    _, report, _ = real_run
    killed = copy.deepcopy(report)
    killed["run"].update(finished=None, exit_code=None, interrupted=True)
    name = next(iter(killed["hosts"]))
    killed["hosts"][name]["steps"][-1].update(status="interrupted", exit_code=None, duration=None)
    doc = parse(render_html(killed))
    assert "did not finish" in next(doc.iter("header")).all_text()
    bar = next(rows(doc)[0].iter("span", "bar"))
    assert list(bar.iter("i"))[-1].attrs["class"] == "s-interrupted"


def test_a_thousand_host_report_renders_one_row_per_host(real_run) -> None:
    _, report, _ = real_run
    big = clone_hosts(report, 1000)
    doc = parse(render_html(big))
    assert len(rows(doc)) == 1000
    assert len({row.attrs["id"] for row in rows(doc)}) == 1000
    total = next(b for b in doc.iter("button", "count") if b.attrs["data-filter-outcome"] == "")
    assert total.attrs["data-count"] == "1000"


def clone_hosts(report: dict, count: int) -> dict:
    """A fleet of `count` hosts made of copies of the report's own hosts, counts kept consistent."""
    big = copy.deepcopy(report)
    sources = list(report["hosts"].values())
    big["hosts"] = {f"srv{i:04d}": copy.deepcopy(sources[i % len(sources)]) for i in range(count)}
    counts: dict[str, int] = {}
    for host in big["hosts"].values():
        counts[host["outcome"]] = counts.get(host["outcome"], 0) + 1
    big["run"]["counts"] = counts
    return big
