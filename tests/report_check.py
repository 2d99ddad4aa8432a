"""Does a committed report still regenerate to the same tables and numbers?

Writes the report of the runs under a committed results directory (as `fambench report DIR`
does, with its defaults) into a temporary directory, then compares, line by line, the fresh
report.md, comparison.md and CSV tables with those committed beside the runs. In report.md the
"Generated ... by fambench ..." time and version are ignored, and so are two sections that
hold no result: *Plots* lists the plots of the files present (the FAM traces stay out of git,
so a checkout draws fewer) and *Provenance* has a row per key the reporting fambench knows.
The PNGs are written but not compared.

Prints the differing lines as a unified diff and exits 1 when anything differs, else exits 0;
either way it says how long the regeneration took. ``--out DIR`` keeps the regenerated files
in DIR (outside results/), for a full `diff -r` of two versions of the code. Run it from the
repository root, so that the report names its source as the committed one does:

    PYTHONPATH=$PWD .venv/bin/python tests/report_check.py [results/study]

tests/integration/test_committed_reports.py runs the same check on every committed report.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
import time
from pathlib import Path

from fambench.report import write_report

#: The sentence of report.md that changes with every regeneration.
GENERATED = re.compile(r"Generated [^.]* UTC by fambench \S+?\.(\s|$)")
#: Sections of report.md left out of the comparison (see the module's docstring).
SKIPPED_SECTIONS = ("## Plots", "## Provenance")
#: The files compared when they are committed beside report.md (and every *.csv there).
TEXT_FILES = ("report.md", "comparison.md")


def _lines(path: Path) -> list[str]:
    text = GENERATED.sub(r"Generated <when> by fambench <version>.\1", path.read_text("utf-8"))
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith("## "):
            skipping = path.name == "report.md" and line.strip() in SKIPPED_SECTIONS
        if not skipping:
            kept.append(line)
    return kept


def compared_files(committed: Path) -> list[str]:
    """The names of the committed report files that are compared."""
    names = [name for name in TEXT_FILES if (committed / name).is_file()]
    return names + sorted(p.name for p in committed.glob("*.csv"))


def differences(committed: Path, fresh: Path) -> list[str]:
    """Unified-diff lines of every compared file that differs (a missing file is one line)."""
    out: list[str] = []
    for name in compared_files(committed):
        if not (fresh / name).is_file():
            out.append(f"{name}: not written by the regenerated report")
            continue
        out += difflib.unified_diff(
            _lines(committed / name),
            _lines(fresh / name),
            fromfile=f"committed/{name}",
            tofile=f"regenerated/{name}",
            lineterm="",
        )
    return out


def check(committed: Path, out: Path) -> tuple[list[str], float]:
    """Regenerate the report of ``committed`` into ``out``: (differing lines, seconds taken)."""
    start = time.perf_counter()
    write_report(committed, out, reference="fam")
    return differences(committed, out), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results/study", type=Path)
    parser.add_argument("--out", type=Path, help="Keep the regenerated files here.")
    args = parser.parse_args()
    committed: Path = args.results
    if not (committed / "report.md").is_file():
        print(f"{committed}: no report.md to compare with", file=sys.stderr)
        return 2
    if args.out is not None:
        diff, seconds = check(committed, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="fambench-report-") as tmp:
            diff, seconds = check(committed, Path(tmp))
    names = ", ".join(compared_files(committed))
    if diff:
        print("\n".join(diff))
        print(f"{committed}: the regenerated report differs ({names}; {seconds:.0f} s)")
        return 1
    print(f"{committed}: the regenerated report matches ({names}; {seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
