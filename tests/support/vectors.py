"""Deterministic synthetic retrieval data: clustered 1536-d embeddings with text and metadata.

Public embedding sets cannot be downloaded here. Real embeddings are clustered by topic and have a low intrinsic
dimension, so each row is a cluster centre plus a point in that cluster's own low-dimensional subspace plus a
little isotropic noise, normalised (as OpenAI's embeddings are). Queries are drawn the same way, near the data,
but are not rows. Every array comes from a seeded generator: the same N gives the same data on every run.
"""

from __future__ import annotations

import numpy as np

DIM = 1536
LATENT = 24  # the intrinsic dimension inside one cluster
WORDS_PER_TOPIC = 20
COMMON = ("budget", "schedule", "client", "shoot", "crew", "location", "edit", "review", "draft", "final",
          "studio", "camera", "lighting", "sound", "script", "brief", "invoice", "quote", "delivery", "notes")


class Corpus:
    """N rows in `clusters` clusters; `seed` fixes everything."""

    def __init__(self, n: int, clusters: int | None = None, seed: int = 15) -> None:
        self.n = n
        self.seed = seed
        self.clusters = clusters or max(10, n // 1000)
        rng = np.random.default_rng(seed)
        centres = rng.standard_normal((self.clusters, DIM), dtype=np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        self.bases = rng.standard_normal((self.clusters, LATENT, DIM), dtype=np.float32) / np.sqrt(DIM)
        self.assignment = rng.integers(0, self.clusters, n)
        # Filters are independent of the vectors (the hard case for a filtered index scan).
        self.bucket10 = rng.integers(0, 10, n)
        self.bucket100 = rng.integers(0, 100, n)

    def _points(self, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        latent = rng.standard_normal((len(clusters), LATENT), dtype=np.float32) * 0.6
        points = self.centres[clusters].copy()
        for c in np.unique(clusters):
            members = clusters == c
            points[members] += latent[members] @ self.bases[c]
        points += rng.standard_normal(points.shape, dtype=np.float32) * (0.25 / np.sqrt(DIM))
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    def embeddings(self, start: int = 0, stop: int | None = None, chunk: int = 10_000) -> np.ndarray:
        """Rows [start, stop) as float32, generated chunk by chunk (each chunk seeded by its index)."""
        stop = self.n if stop is None else stop
        parts = []
        for first in range(start - start % chunk, stop, chunk):
            rng = np.random.default_rng((self.seed, first))
            block = self._points(self.assignment[first:first + chunk], rng)
            parts.append(block[max(0, start - first):stop - first])
        return np.concatenate(parts) if parts else np.empty((0, DIM), np.float32)

    def topic_word(self, cluster: int, j: int) -> str:
        return f"topic{cluster}w{j}"

    def content(self, i: int) -> str:
        rng = np.random.default_rng((self.seed, 7, i))
        c = int(self.assignment[i])
        words = [self.topic_word(c, int(j)) for j in rng.choice(WORDS_PER_TOPIC, 5, replace=False)]
        words += [COMMON[int(j)] for j in rng.choice(len(COMMON), 8, replace=False)]
        return f"chunk {i}: " + " ".join(words)

    def metadata(self, i: int) -> dict:
        return {"row": i, "b10": int(self.bucket10[i]), "b100": int(self.bucket100[i])}

    def rows(self, start: int = 0, stop: int | None = None):
        """Dicts for `studioops.rag.add`."""
        stop = self.n if stop is None else stop
        vectors = self.embeddings(start, stop)
        for offset, i in enumerate(range(start, stop)):
            yield {"content": self.content(i), "metadata": self.metadata(i), "embedding": vectors[offset]}

    def queries(self, count: int, seed: int = 99) -> tuple[np.ndarray, list[str]]:
        """`count` query vectors near the data, and a two-word text query from each one's topic."""
        rng = np.random.default_rng((self.seed, seed))
        clusters = self.assignment[rng.integers(0, self.n, count)]
        vectors = self._points(clusters, rng)
        texts = [f"{self.topic_word(int(c), int(rng.integers(WORDS_PER_TOPIC)))} {COMMON[int(rng.integers(20))]}"
                 for c in clusters]
        return vectors, texts


def exact_neighbours(corpus: Corpus, queries: np.ndarray, k: int, mask: np.ndarray | None = None,
                     chunk: int = 20_000) -> np.ndarray:
    """Row numbers of the k nearest rows by cosine similarity (all vectors are unit length), per query."""
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_rows = np.empty((len(queries), 0), np.int64)
    for first in range(0, corpus.n, chunk):
        block = corpus.embeddings(first, min(corpus.n, first + chunk))
        scores = queries @ block.T
        if mask is not None:
            scores = np.where(mask[:, first:first + len(block)], scores, -np.inf)
        rows = np.broadcast_to(np.arange(first, first + len(block)), scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_rows = np.concatenate([best_rows, rows], axis=1)
        top = np.argsort(-all_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_rows = np.take_along_axis(all_rows, top, axis=1)
    return best_rows
