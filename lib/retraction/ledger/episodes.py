"""The counting rule: which outcome rows the metrics count.

A *copy* is a message in one mailbox: (message_id, recipient compared case-insensitively).
Its outcomes for one destination fall into *episodes*; in each episode exactly one row is
`counted`, the one with the best status (retracted > already_in_destination > failed; the
earliest wins a tie). So:

- a rerun of the same request (already_in_destination, or retracted again) adds nothing;
- a failed copy that a later run (or a retried chunk) retracts counts once, as retracted,
  at the time of the retraction; the failure row stays in the ledger, uncounted;
- an episode ends when the ledger has seen the copy in the destination (retracted or
  already_in_destination) and then records a move of it elsewhere (a `retracted` outcome to
  another destination, e.g. a restore to the inbox). Retracting it back afterwards opens a
  new episode and counts again. Failure-only episodes never end: nothing left;
- previews are a track of their own (previewed > failed), one episode per copy and
  destination until the copy is next moved; they never count as retractions.

Within one run a copy has one row (unique (run_id, recipient_key)): a retried chunk's outcome
replaces the run's row only if it is better (or both failed: the latest failure is current).

Rows are decided in arrival order, under a lock on the copy, so concurrent writers agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional

from retraction.metrics.record import RANK
from retraction.model import Status

PLACED = (Status.RETRACTED.value, Status.ALREADY_IN_DESTINATION.value)


@dataclass
class Episode:
    """Per copy and destination. `run_id` is the run whose row counts in the open episode;
    None when no episode is open."""

    episode: int = 0
    run_id: Optional[str] = None
    rank: int = 0
    placed: bool = False
    preview_episode: int = 0
    preview_run_id: Optional[str] = None
    preview_rank: int = 0
    preview_moves: Optional[int] = None


@dataclass
class Copy:
    location: Optional[str] = None
    moves: int = 0
    episodes: Dict[str, Episode] = field(default_factory=dict)
    touched: set = field(default_factory=set)  # destinations whose Episode changed


class Decision(NamedTuple):  # a tuple: one is made per outcome row, and cheaply
    counted: bool
    episode: int
    uncount_run_id: Optional[str] = None  # the row (of this copy) that no longer counts


def supersedes(new_status: str, old_status: str) -> bool:
    """Does a retried chunk's outcome replace the run's stored row for that copy?"""
    if new_status == Status.FAILED and old_status == Status.FAILED:
        return True
    return RANK[new_status] > RANK[old_status]


def decide(copy: Copy, run_id: str, destination: str, status: str, preview: bool,
           replacing: bool) -> Decision:
    """Place one outcome row of `copy` and update the copy's state. `replacing`: the run
    already had a row for this copy, which this outcome supersedes."""
    ep = copy.episodes.get(destination)
    if ep is None:
        ep = copy.episodes[destination] = Episode()
    copy.touched.add(destination)
    rank = RANK[status]
    if preview:
        return _decide_preview(copy, ep, run_id, rank, replacing)
    uncount = None
    if replacing and ep.run_id == run_id:
        ep.rank, counted = rank, True  # the run's own counted row gets better in place
    elif ep.run_id is None:
        ep.episode, ep.run_id, ep.rank, counted = ep.episode + 1, run_id, rank, True
    elif rank > ep.rank:
        uncount, ep.run_id, ep.rank, counted = ep.run_id, run_id, rank, True
    else:
        counted = False
    decision = Decision(counted=counted, episode=ep.episode, uncount_run_id=uncount)
    if status in PLACED:
        ep.placed = True
        copy.location = destination
    if status == Status.RETRACTED:
        copy.moves += 1
        for other, other_ep in copy.episodes.items():
            if other != destination and other_ep.placed:  # the copy left `other`
                other_ep.run_id, other_ep.rank, other_ep.placed = None, 0, False
                copy.touched.add(other)
    return decision


def _decide_preview(copy: Copy, ep: Episode, run_id: str, rank: int,
                    replacing: bool) -> Decision:
    is_open = ep.preview_run_id is not None and ep.preview_moves == copy.moves
    uncount = None
    if replacing and is_open and ep.preview_run_id == run_id:
        ep.preview_rank, counted = rank, True
    elif not is_open:
        ep.preview_episode += 1
        ep.preview_run_id, ep.preview_rank, ep.preview_moves = run_id, rank, copy.moves
        counted = True
    elif rank > ep.preview_rank:
        uncount, ep.preview_run_id, ep.preview_rank, counted = ep.preview_run_id, run_id, \
            rank, True
    else:
        counted = False
    return Decision(counted=counted, episode=ep.preview_episode, uncount_run_id=uncount)
