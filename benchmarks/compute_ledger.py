"""The compute a study has spent, printed as markdown: CPU- and thread-hours per optimizer for
each phase, and how much was timed uncontended (see fambench.analysis.ledger; the report of a
study writes the same table with ``fambench report ... --tuning-runs``).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/compute_ledger.py \\
        tuning=results/sweeps study=results/study
"""

from __future__ import annotations

import sys
from pathlib import Path

from fambench.analysis.ledger import compute_ledger, ledger_display
from fambench.analysis.tables import to_markdown


def main(argv: list[str]) -> int:
    sources = {}
    for item in argv or ["tuning=results/sweeps", "study=results/study"]:
        phase, _, path = item.partition("=")
        if not path or not Path(path).is_dir():
            print(f"{item!r}: expected PHASE=DIRECTORY with runs under it", file=sys.stderr)
            return 2
        sources[phase] = [Path(path)]
    print(to_markdown(ledger_display(compute_ledger(sources))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
