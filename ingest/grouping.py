"""How a site's ablations are cut into suffix batches (docs/sweep.md#suffix-only-recompute).

Plain host-side arithmetic on lists, shared by the sweep (ingest/sweep.py) and the cost model's
``planned_flops`` (ingest/cost.py), so that the plan and the run cannot drift apart.

A batch recomputes positions ``start..stop-1`` for every row, where ``start`` is its rows' earliest
first ablated position and ``stop - 1`` their latest read position; a row whose own suffix is
shorter pays for the difference (padding). Rows come sorted by (first, read, prompt). Filling every
batch to ``batch_size`` regardless mixes groups of different first positions; cutting at every group
boundary leaves small batches. The rule in between: a batch takes as many rows as it may (up to
``batch_size``), but ends at a (first, read) group boundary when taking the next group's rows would
push its padding past ``max_padding`` of the positions it computes.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PADDING = 0.02  # share of a batch's (row, position) pairs that may be padding when groups mix


@dataclass(frozen=True)
class SuffixBatch:
    """Rows ``lo:hi`` of the sorted ablations, recomputed over positions ``start..stop-1``.

    ``n_changed``: the rows' (row, position) pairs with a nonzero ablation (where the ablated
    block's queries, keys and values must be recomputed); ``prompt``: the one prompt every row
    comes from, or None when they come from several (then each row gathers its own prefix)."""

    lo: int
    hi: int
    start: int
    stop: int
    n_changed: int
    prompt: int | None


def plan_batches(
    first: list[int], read: list[int], prompt: list[int], n_changed: list[int], batch_size: int,
    max_padding: float = MAX_PADDING,
) -> list[SuffixBatch]:  # fmt: skip
    """Cut rows sorted by (first, read, prompt) into :class:`SuffixBatch` es (see the module doc).

    ``first``/``read``: each row's first ablated and read position; ``n_changed``: its number of
    positions with a nonzero ablation. ``max_padding`` 1.0 gives plain full batches; 0 never mixes groups.
    """
    n, out, lo = len(first), [], 0
    while lo < n:
        limit = min(lo + batch_size, n)
        start, hi, stop, useful = first[lo], lo, 0, 0
        best = None  # (hi, stop) of the last group boundary within the padding budget
        while hi < limit:
            key = (first[hi], read[hi])
            g = hi
            while g < limit and (first[g], read[g]) == key:
                useful += read[g] - first[g] + 1
                g += 1
            hi, stop = g, max(stop, key[1] + 1)
            if best is None or 1.0 - useful / ((hi - lo) * (stop - start)) <= max_padding:
                best = (hi, stop)
            else:
                break  # padding only grows with later groups (their first positions are later)
        hi, stop = best
        prompts = set(prompt[lo:hi])
        out.append(SuffixBatch(lo, hi, start, stop, sum(n_changed[lo:hi]), prompts.pop() if len(prompts) == 1 else None))
        lo = hi
    return out
