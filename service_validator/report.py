"""Check results: progress as they run, a final table, a score and a JSON report."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class CheckResult:
    name: str
    stage: str
    passed: bool
    evidence: str
    seconds: float = 0.0
    measurements: dict = field(default_factory=dict)


class CheckFailed(Exception):
    """Raised by a check: the message is the evidence (the failing line or number)."""

    def __init__(self, evidence: str, measurements: dict | None = None) -> None:
        super().__init__(evidence)
        self.evidence = evidence
        self.measurements = measurements or {}


class Passed:
    """Returned by a check: what was measured that shows it passed."""

    def __init__(self, evidence: str, measurements: dict | None = None) -> None:
        self.evidence = evidence
        self.measurements = measurements or {}


class Run:
    """Runs checks one by one, printing each as it starts and ends."""

    def __init__(self, only: set[str] | None = None, stream=sys.stdout) -> None:
        self.results: list[CheckResult] = []
        self.only = only
        self.stream = stream

    def wanted(self, name: str) -> bool:
        return self.only is None or name in self.only

    def check(
        self, stage: str, name: str, function: Callable[[], Passed], *, always: bool = False
    ) -> CheckResult | None:
        """Run one check (unless --only leaves it out and it is not `always` needed)."""
        if not always and not self.wanted(name):
            return None
        print(f"[{stage}] {name} ...", file=self.stream, flush=True)
        started = time.monotonic()
        try:
            outcome = function()
            result = CheckResult(name, stage, True, outcome.evidence, 0, outcome.measurements)
        except CheckFailed as failure:
            result = CheckResult(name, stage, False, failure.evidence, 0, failure.measurements)
        except Exception as error:  # a check that crashes is a failed check, with its reason
            result = CheckResult(name, stage, False, f"{type(error).__name__}: {error}")
        result.seconds = round(time.monotonic() - started, 2)
        verdict = "PASS" if result.passed else "FAIL"
        print(
            f"[{stage}] {name}: {verdict} ({result.seconds}s) {result.evidence}", file=self.stream
        )
        self.results.append(result)
        return result

    @property
    def score(self) -> tuple[int, int]:
        return sum(result.passed for result in self.results), len(self.results)

    def table(self) -> str:
        rows = [("check", "result", "evidence")]
        for result in self.results:
            evidence = result.evidence.replace("\n", " ")
            evidence = evidence if len(evidence) <= 110 else evidence[:107] + "..."
            rows.append((result.name, "PASS" if result.passed else "FAIL", evidence))
        widths = [max(len(row[column]) for row in rows) for column in range(2)]
        lines = [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}" for row in rows]
        lines.insert(1, f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 8}")
        passed, total = self.score
        lines.append(
            f"\nscore: {passed}/{total} checks passed ({100 * passed / max(total, 1):.1f}%)"
        )
        return "\n".join(lines)

    def write_json(self, path: Path, project: Path) -> None:
        passed, total = self.score
        report = {
            "project": str(project),
            "passed": passed,
            "total": total,
            "score": passed / total if total else 0.0,
            "checks": [asdict(result) for result in self.results],
        }
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
