"""Usage per model per UTC day: calls, tokens, cost, error rate and latency p50/p95, read from the rollup that
migration 005's triggers keep (usage_rollup), so a range of days costs a few hundred rows, not every call.

Latencies sit in buckets that grow by 20%; a percentile is the middle of its bucket, within 10% of the exact
figure, and is labelled an estimate where it is shown.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

GROWTH = 1.2


def bucket_ms(bucket: int) -> float:
    """The middle (geometric) of a latency bucket, in milliseconds."""
    return max(0.0, GROWTH ** (bucket + 0.5) - 1)


def percentile(buckets: dict[int, int], q: float) -> float | None:
    """The q-quantile of latencies counted per bucket (bucket -1, no latency, left out)."""
    counted = sorted((b, n) for b, n in buckets.items() if b >= 0 and n > 0)
    total = sum(n for _, n in counted)
    if not total:
        return None
    rank, seen = math.ceil(q * total), 0
    for b, n in counted:
        seen += n
        if seen >= rank:
            return bucket_ms(b)
    return bucket_ms(counted[-1][0])


def _figures(calls: int, errors: int, tokens: int, cost: Decimal, buckets: dict[int, int]) -> dict[str, Any]:
    return {"calls": calls, "errors": errors, "error_rate": errors / calls if calls else 0.0, "tokens": tokens,
            "cost": float(cost), "latency_p50_ms": percentile(buckets, 0.5),
            "latency_p95_ms": percentile(buckets, 0.95)}


def usage(conn, first: date, last: date) -> dict[str, Any]:
    """Usage from day `first` to day `last` (UTC, both included):
    {"days": [...], "models": [...], "rows": [{day, model, ...figures}], "totals": {model: figures}}."""
    if last < first:
        first, last = last, first
    rows = conn.execute(
        "SELECT day, model, bucket, calls, errors, tokens, cost FROM usage_rollup "
        "WHERE day BETWEEN %s AND %s AND calls <> 0 ORDER BY day, model, bucket", (first, last)).fetchall()
    cells: dict[tuple[date, str], list] = {}
    totals: dict[str, list] = {}
    for day, model, bucket, calls, errors, tokens, cost in rows:
        for acc in (cells.setdefault((day, model), [0, 0, 0, Decimal(0), {}]),
                    totals.setdefault(model, [0, 0, 0, Decimal(0), {}])):
            acc[0] += calls
            acc[1] += errors
            acc[2] += tokens
            acc[3] += cost
            acc[4][bucket] = acc[4].get(bucket, 0) + calls
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return {
        "first": first, "last": last, "days": days, "models": sorted(totals),
        "rows": [{"day": day, "model": model, **_figures(*acc)} for (day, model), acc in sorted(cells.items())],
        "totals": {model: _figures(*acc) for model, acc in sorted(totals.items())},
    }
