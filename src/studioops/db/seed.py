"""Sample data for a production studio: clients' projects, priced cost plans, documents, retrieval, a chat.

Every row has a fixed id (uuid5 of its name), so seeding twice inserts nothing the second time.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from dataclasses import dataclass

from studioops.config import DatabaseURL
from studioops.db.connect import connect

NAMESPACE = uuid.UUID("6f1c1e0a-3b1e-4c55-9a57-2f0d5e7c9b10")
APP_TABLES = [
    "projects", "plans", "plan_items", "documents", "doc_chunks", "rag_documents", "chat_sessions", "chat_messages",
]
EMBEDDING_DIM = 1536


def sid(*parts: str) -> uuid.UUID:
    """A stable id for a seeded row."""
    return uuid.uuid5(NAMESPACE, "/".join(parts))


def embedding_for(text: str) -> str:
    """A deterministic unit vector for `text`, in pgvector's text form (sample data, not a real model)."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    values = [rng.gauss(0, 1) for _ in range(EMBEDDING_DIM)]
    norm = math.sqrt(sum(v * v for v in values))
    return "[" + ",".join(f"{v / norm:.6f}" for v in values) + "]"


PROJECTS = [
    # name, client, status, budget, description
    ("Summer Campaign 2026", "Northwind Beverages", "active", 185000,
     "Three 30-second TV spots and six social cut-downs for the summer launch."),
    ("Harbor Lights Music Video", "Blue Harbor Records", "active", 42000,
     "One-day night shoot on the waterfront for the lead single."),
    ("Wild Atlas Documentary", "Atlas Outdoor Co.", "draft", 320000,
     "Four-part documentary series following long-distance hikers across the Alps."),
    ("Northwind Holiday Teaser", "Northwind Beverages", "completed", 28500,
     "A 15-second teaser for the holiday season."),
]

PLANS = {
    "Summer Campaign 2026": [
        ("Production budget", "approved", [
            ("crew", "Director, 3 shoot days", 3, "day", 4500),
            ("crew", "Director of photography, 3 shoot days", 3, "day", 2800),
            ("equipment", "ARRI Alexa 35 camera package", 3, "day", 1950),
            ("location", "Beach location permit and fees", 1, "unit", 6200),
            ("talent", "Lead talent buyout (2 years, national)", 2, "person", 12500),
            ("post_production", "Edit, grade and sound mix", 1, "package", 38000),
        ]),
    ],
    "Harbor Lights Music Video": [
        ("Shoot estimate", "submitted", [
            ("crew", "Gaffer and two electricians, night rate", 1, "day", 3600),
            ("equipment", "Lighting package with generator", 1, "day", 4200),
            ("location", "Harbor pier rental, 12 hours", 12, "hour", 350),
            ("post_production", "Colour grade", 1, "package", 5500),
        ]),
    ],
    "Wild Atlas Documentary": [
        ("Development plan", "draft", [
            ("travel", "Crew flights and rail passes", 6, "person", 1450),
            ("crew", "Field producer, 40 days", 40, "day", 650),
            ("equipment", "Drone kit with licensed operator", 10, "day", 1200),
            ("materials", "Archive footage licence", 1, "unit", 9000),
        ]),
    ],
    "Northwind Holiday Teaser": [
        ("Final quote", "approved", [
            ("crew", "Director, 1 shoot day", 1, "day", 4500),
            ("post_production", "Motion graphics", 1, "package", 7200),
        ]),
    ],
}

DOCUMENTS = [
    # project, title, kind, chunks
    ("Summer Campaign 2026", "Creative brief - Summer Campaign", "brief", [
        "The summer campaign introduces the new citrus flavour to viewers aged 18 to 34.",
        "Tone: bright, playful, sun-drenched. Key visual: a shared bottle on a crowded beach at golden hour.",
        "Deliverables: three 30-second spots, six 6-second social cut-downs, and stills for print.",
    ]),
    ("Summer Campaign 2026", "Quote Q-2026-014", "quote", [
        "Quote Q-2026-014 covers three shoot days, talent buyouts and full post-production.",
        "Payment terms: 50 percent on signature, 50 percent on delivery of the final masters.",
    ]),
    ("Harbor Lights Music Video", "Shot list - Harbor Lights", "script", [
        "Opening: slow dolly along the pier, the singer silhouetted against the harbor lights.",
        "Chorus: handheld close-ups in the rain machine, practical neon reflections on wet boards.",
    ]),
    ("Wild Atlas Documentary", "Treatment - Wild Atlas", "brief", [
        "Wild Atlas follows four hikers over 1,200 kilometres of Alpine trails across one summer.",
        "Each episode centres on one hiker and one mountain pass, filmed with a crew of three.",
    ]),
]

CHAT = [
    ("user", "What is the total approved budget for the Summer Campaign?", None),
    ("assistant", "The approved production budget for Summer Campaign 2026 totals 96,950.00 USD across six line "
                  "items; post-production (38,000.00) is the largest.", "gpt-4o-mini"),
    ("user", "Which deliverables does the brief ask for?", None),
    ("assistant", "Three 30-second spots, six 6-second social cut-downs, and stills for print.", "gpt-4o-mini"),
]


@dataclass
class SeedResult:
    inserted: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.inserted.values())


def seed(db: DatabaseURL, reset: bool = False) -> SeedResult:
    """Insert the sample rows that are missing (all of them after `reset`, which empties the app tables)."""
    counts = dict.fromkeys(APP_TABLES, 0)
    with connect(db) as conn, conn.cursor() as cur:
        if reset:
            cur.execute("TRUNCATE " + ", ".join(APP_TABLES) + " CASCADE")

        def insert(table: str, row: dict) -> None:
            columns = ", ".join(row)
            marks = ", ".join(f"%({k})s" + ("::vector" if k == "embedding" else "") for k in row)
            cur.execute(
                f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING", row
            )
            counts[table] += cur.rowcount

        for name, client, status, budget, description in PROJECTS:
            insert("projects", {"id": sid("project", name), "name": name, "client_name": client,
                                "status": status, "budget": budget, "description": description})
        for project, plans in PLANS.items():
            for plan_name, plan_status, items in plans:
                plan_id = sid("plan", project, plan_name)
                insert("plans", {"id": plan_id, "project_id": sid("project", project), "name": plan_name,
                                 "status": plan_status, "margin_pct": 15})
                for position, (category, text, qty, unit, price) in enumerate(items):
                    insert("plan_items", {"id": sid("item", project, plan_name, str(position)), "plan_id": plan_id,
                                          "position": position, "category": category, "description": text,
                                          "quantity": qty, "unit": unit, "unit_price": price})
        for project, title, kind, chunks in DOCUMENTS:
            doc_id = sid("document", project, title)
            body = "\n".join(chunks).encode()
            insert("documents", {"id": doc_id, "project_id": sid("project", project), "title": title, "kind": kind,
                                 "status": "ready", "storage_bucket": "documents",
                                 "storage_key": f"projects/{sid('project', project)}/{doc_id}.txt",
                                 "mime_type": "text/plain", "size_bytes": len(body),
                                 "sha256": hashlib.sha256(body).hexdigest()})
            for index, text in enumerate(chunks):
                chunk_id = sid("chunk", project, title, str(index))
                insert("doc_chunks", {"id": chunk_id, "document_id": doc_id, "chunk_index": index, "text": text,
                                      "token_count": len(text.split())})
                insert("rag_documents", {"id": sid("rag", project, title, str(index)), "document_id": doc_id,
                                         "chunk_id": chunk_id, "content": text,
                                         "metadata": f'{{"kind": "{kind}", "chunk": {index}}}',
                                         "embedding": embedding_for(text)})
        session_id = sid("chat", "budget questions")
        insert("chat_sessions", {"id": session_id, "project_id": sid("project", PROJECTS[0][0]),
                                 "title": "Budget questions"})
        for index, (role, content, model) in enumerate(CHAT):
            insert("chat_messages", {"id": sid("message", str(index)), "session_id": session_id, "role": role,
                                     "content": content, "model": model,
                                     # Spread creation times so the conversation keeps its order.
                                     "created_at": f"2026-06-01T10:{index:02d}:00Z"})
        conn.commit()
    return SeedResult(counts)
