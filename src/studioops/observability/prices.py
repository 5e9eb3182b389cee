"""Model prices and cost at ingest, as Langfuse computes it.

The default table is Langfuse's own (data/model_prices.json notes its origin and licence). A model name is matched
against each entry's `match_pattern` regex (a search, as PostgreSQL's `~` does in Langfuse); entries from the
user's file (OBSERVABILITY_PRICES_FILE) are tried first, so they add models or override prices. Cost per usage key
is units x price; provided costs are authoritative; an unknown model's cost is None, never guessed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from studioops.errors import ConfigError

DEFAULT_PRICES = Path(__file__).parent / "data" / "model_prices.json"


@dataclass(frozen=True)
class ModelPrice:
    model_name: str
    pattern: re.Pattern
    prices: dict[str, float]


def _load(path: Path, what: str) -> list[ModelPrice]:
    try:
        doc = json.loads(path.read_text())
        entries = doc["models"] if isinstance(doc, dict) else doc
        out = []
        for entry in entries:
            pattern = entry.get("match_pattern") or f"(?i)^{re.escape(entry['model_name'])}$"
            prices = {str(k): float(v) for k, v in entry["prices"].items()}
            out.append(ModelPrice(entry["model_name"], re.compile(pattern), prices))
        return out
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}. Fix the path in "
                          "OBSERVABILITY_PRICES_FILE") from None
    except (ValueError, KeyError, TypeError, AttributeError, re.error) as exc:
        raise ConfigError(
            f"{what} {path} is not a price table ({type(exc).__name__}: {exc}). Write a JSON list of "
            '{"model_name": ..., "match_pattern": ..., "prices": {"input": USD_PER_TOKEN, "output": ...}}'
        ) from None


class PriceTable:
    """The user's prices first, then Langfuse's defaults. Lookups are cached per model name."""

    def __init__(self, user_file: Path | None = None) -> None:
        self.entries = (_load(user_file, "the price file") if user_file else []) + _load(DEFAULT_PRICES,
                                                                                           "the price table")
        self.find = lru_cache(maxsize=4096)(self._find)

    def _find(self, model: str) -> ModelPrice | None:
        for entry in self.entries:
            if entry.pattern.search(model):
                return entry
        return None

    def cost(self, model: str | None, usage: dict[str, Any]) -> dict[str, float] | None:
        """Cost details for `usage` of `model` ({key: USD, ..., "total": USD}); None for an unknown model."""
        entry = self.find(model) if model else None
        if entry is None:
            return None
        details = {key: float(units) * entry.prices[key] for key, units in usage.items()
                   if key in entry.prices and isinstance(units, int | float) and not isinstance(units, bool)}
        if not details:
            return None
        if "total" not in details:
            details["total"] = sum(details.values())
        return details


@lru_cache(maxsize=8)
def price_table(user_file: Path | None = None) -> PriceTable:
    return PriceTable(user_file)


def provided_total(cost: dict[str, Any]) -> float | None:
    """Langfuse's rule for provided costs: `total` when given, else input + output when only those are given."""
    values = {k: v for k, v in cost.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if "total" in values:
        return float(values["total"])
    if values and set(values) <= {"input", "output"}:
        return float(sum(values.values()))
    return None
