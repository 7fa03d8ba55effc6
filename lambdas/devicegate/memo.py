"""Bounded memos kept per container (a Lambda's module globals): what a parse or a check of the
exact same bytes gave before. Callers store only successes; a memo that is full starts over."""

from __future__ import annotations


def remember(memo: dict, key, value, limit: int):
    """Keep ``value`` under ``key`` in ``memo`` (cleared first when it holds ``limit`` entries)."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
