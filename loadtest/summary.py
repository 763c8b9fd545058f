"""Print p50/p95/p99 and failures per request type from a Locust CSV run."""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main(prefix: str) -> int:
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        print(f"no {stats}: did Locust run?", file=sys.stderr)
        return 1
    rows = list(csv.DictReader(stats.open()))
    print(f"{'request':<34} {'count':>8} {'fail':>6} {'req/s':>8} {'p50':>6} {'p95':>6} {'p99':>6}  (ms)")
    failures = 0
    for row in rows:
        name = row["Name"] if row["Name"] != "Aggregated" else "ALL"
        failures += int(row["Failure Count"]) if name == "ALL" else 0
        print(
            f"{(row['Type'] + ' ' + name).strip()[:34]:<34} {row['Request Count']:>8} {row['Failure Count']:>6} "
            f"{float(row['Requests/s']):>8.1f} {row['50%']:>6} {row['95%']:>6} {row['99%']:>6}"
        )
    print(f"failures: {failures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "loadtest/reports/run"))
