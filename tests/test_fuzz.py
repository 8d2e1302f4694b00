"""A seeded sample of the fuzz set (benchmarks/fuzz.py): bad NIR files, checkpoints and command lines.

No traceback, hang, crash, code execution or non-finite Q with exit 0; every input meant to be
refused gets one ``error:`` line and exit 2. The full set: ``python benchmarks/fuzz.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import fuzz  # noqa: E402

SAMPLE = 120


def test_fuzz_sample_keeps_the_error_contract(tmp_path: Path) -> None:
    cases = fuzz.make_cases(seed=0, n=SAMPLE, work=tmp_path / "work")
    results = fuzz.run_cases(cases, tmp_path / "logs", limit_s=45.0, parallel=2)
    assert len(results) == len(cases) >= SAMPLE * 0.9
    bad = [f"{r.kind}: {r.case.script} {' '.join(r.case.argv)[:120]} :: {r.stderr_tail[-160:]}"
           for r in fuzz.violations(results)]
    assert not bad, "\n".join(bad)
    summary = fuzz.report(results)
    assert summary["outcomes"].get("clean", 0) > len(results) // 2  # most inputs are bad ones


def test_the_classifier_tells_outcomes_apart(tmp_path: Path) -> None:
    case = fuzz.Case("c", "inspect-nir", ["x.nir"], "reject")
    (tmp_path / "c.err").write_text("error: x.nir: not a NIR file\n")
    assert fuzz.classify(case, 2, False, tmp_path).kind == "clean"
    (tmp_path / "c.err").write_text("usage: inspect-nir ...\ninspect-nir: error: bad\n")
    assert fuzz.classify(case, 2, False, tmp_path).kind == "other"
    (tmp_path / "c.err").write_text("Traceback (most recent call last):\n  ...\nValueError: x\n")
    assert fuzz.classify(case, 1, False, tmp_path).kind == "traceback"
    assert fuzz.classify(case, None, True, tmp_path).kind == "hang"
    (tmp_path / "c.err").write_text("")
    ok = fuzz.classify(case, 0, False, tmp_path)
    assert ok.kind == "ok" and fuzz.violations([ok]) == [ok]  # an input meant to be refused was accepted
