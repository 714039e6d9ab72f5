"""A host name with a bidirectional override (U+202E) shows escaped in every output a person
reads: the plain lines, the live view's text, junit.xml and report.html (report.json keeps the
name as data)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.lab.lab import Lab
from wuremote.output.live import PlainView

RLO = "\u202e"
NAME = f"web{RLO}10lab"  # shows as "web" + "bal01" reversed: another host's name to the eye


def test_a_bidi_override_in_a_host_name_is_escaped_everywhere_a_person_reads(tmp_path: Path) -> None:
    out = io.StringIO()
    with Lab(scenario="healthy", hosts=1, time_scale=0.002) as lab:
        host = replace(demo_hosts(lab)[0], name=NAME)
        summary = Runner([host], demo_options(tmp_path), subscribers=[PlainView(out)]).run()
    assert summary.outcomes[NAME] == "healthy"
    for text in (out.getvalue(), summary.junit_xml.read_text(encoding="utf-8"),
                 (summary.run_dir / "report.html").read_text(encoding="utf-8")):
        assert RLO not in text
        assert "web\\u202e10lab" in text
