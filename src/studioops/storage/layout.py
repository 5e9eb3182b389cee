"""The design document's buckets and their folders (prefixes)."""

from __future__ import annotations

LAYOUT: dict[str, list[str]] = {
    "documents": ["projects/", "quotes/", "invoices/"],
    "uploads": ["pending/"],
    "generated": ["reports/", "pdfs/"],
    "backups": ["daily/", "weekly/"],
}
BUCKETS = list(LAYOUT)
