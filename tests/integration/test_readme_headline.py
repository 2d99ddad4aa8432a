"""The README's headline is the committed study's: its tables are the report's, line for line."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _section(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
    return lines[start + 1 : end]


def test_the_readme_headline_tables_are_the_reports():
    readme = _section((ROOT / "README.md").read_text("utf-8"), "## What it found")
    report = _section((ROOT / "results/study/report.md").read_text("utf-8"), "## Headline")
    table_lines = [line for line in readme if line.startswith("|")]
    assert len(table_lines) >= 6  # the comparison table and the profile scores, with headers
    missing = [line for line in table_lines if line not in report]
    assert missing == [], "README lines not in results/study/report.md's headline"
    assert any(line.startswith("| optimizer | score by time") for line in table_lines)
