"""What people, CI jobs and scripts read: report.json, JUnit, HTML, transcripts, terminal text and the live view.

Everything here reads typed events (wuremote.events) or the report built from them; nothing
here talks to a host or changes the journal.
"""
