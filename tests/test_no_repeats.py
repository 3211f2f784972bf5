"""Nothing repeated between adapters: what two of them need alike lives once, in core/ or a bots/ common module.

Each adapter's code (bots/<platform>/) is read as lines without indentation, blank lines, comments, imports
and lone brackets; no run of RUN such lines may appear in two adapters."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = 6
TRIVIAL = {'"""', ")", "]", "}", "):", "else:", "try:", "return", "pass", "raise", "finally:"}


def _lines(path: Path) -> list[tuple[str, int]]:
    kept = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = re.sub(r"\s+", " ", line.strip())
        if text and not text.startswith(("#", "from ", "import ")) and text not in TRIVIAL:
            kept.append((text, number))
    return kept


def _runs(lines: list[tuple[str, int]]) -> dict[tuple[str, ...], int]:
    return {tuple(t for t, _ in lines[i:i + RUN]): lines[i][1] for i in range(len(lines) - RUN + 1)}


def test_no_run_of_lines_is_in_two_adapters() -> None:
    adapters = sorted(d for d in (ROOT / "bots").iterdir() if (d / "__init__.py").exists())
    assert len(adapters) >= 3, adapters
    runs = {d.name: {p: _runs(_lines(p)) for p in d.rglob("*.py")} for d in adapters}
    repeated = []
    for a, b in itertools.combinations(sorted(runs), 2):
        for (pa, ra), (pb, rb) in itertools.product(runs[a].items(), runs[b].items()):
            for run in ra.keys() & rb.keys():
                repeated.append(f"{pa.relative_to(ROOT)}:{ra[run]} and {pb.relative_to(ROOT)}:{rb[run]}: {run[0]!r}…")
    assert not repeated, "\n".join(sorted(repeated))
