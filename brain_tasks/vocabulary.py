"""The Brain's words: every state, status, action and champion status, defined once.

They are string enums (`enum.StrEnum`): a member *is* its string, so rows store exactly what they
stored before ("succeeded", "champion", ...), JSON carries the plain word, and a comparison with a
string read back from the database or a task result holds.  Import the member, never retype the word.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """What a step, a run attempt, a symbol's chain or a collection ended (or stands) as."""

    PENDING = "pending"          # an attempt's symbol not started yet
    RUNNING = "running"          # a step of the symbol's chain has started
    OK = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"          # nothing to do (no champion yet, sizer off, ...): not a failure
    STALE = "stale"              # the data is too old to train on: ends the chain like a failure, says why
    CANCELLED = "cancelled"      # an unfinished symbol of an attempt that was stopped
    PARTIAL = "partial"          # an attempt (or publish) where some symbols failed and others did not
    UNKNOWN = "unknown"          # a run id with no attempt on record


OPEN = (Status.PENDING, Status.RUNNING)
TERMINAL = (Status.OK, Status.FAILED, Status.STALE, Status.SKIPPED, Status.CANCELLED)
# Every state an attempt or one of its symbols can be in (the dashboard's gauge has one series each).
RUN_STATES = (Status.PENDING, Status.RUNNING, Status.OK, Status.FAILED, Status.STALE, Status.PARTIAL,
              Status.SKIPPED, Status.CANCELLED)


def outcome_state(status: str | None) -> Status:
    """The state a chain's final status leaves its symbol in: succeeded, skipped and stale stand as
    they are (stale data is the operator's to fix by collecting, not a fault of the chain); anything
    else is a failure of the symbol."""
    return Status(status) if status in (Status.OK, Status.SKIPPED, Status.STALE) else Status.FAILED


class Action(StrEnum):
    """What a champion decision did (rollback_logs.action, champion_history.action)."""

    PROMOTE = "promote"                               # the candidate becomes the champion
    KEEP = "keep"                                     # the champion stays: the candidate is worse
    INSUFFICIENT_EVIDENCE = "insufficient_evidence"   # the champion stays: too few bars to tell
    BACKFILL = "backfill"                             # trained as of an earlier day: recorded, never promoted
    UNCHANGED = "unchanged"                           # same inputs as before: nothing to decide
    ROLLBACK = "rollback"                             # the live champion is rolled back to the previous one
    PIN = "pin"                                       # an operator pinned a version
    NONE = "none"                                     # nothing to compare with yet


class ChampionStatus(StrEnum):
    """A version's place in the registry (model_registry.status)."""

    CANDIDATE = "candidate"
    CHAMPION = "champion"
    REJECTED = "rejected"
    BACKFILL = "backfill"
    PREVIOUS = "previous"
    ROLLED_BACK = "rolled_back"


class Origin(StrEnum):
    """Why a version was trained (model_registry.origin).  The registry views show `retrain` versions;
    a replay's own trainings stay apart until a retrain reaches the very same identity, which adopts the
    version (the same training is the same version: see brain/registry.py `adopt`)."""

    RETRAIN = "retrain"   # the daily retrain chain (beat, `brain-tasks retrain`, Engine code)
    REPLAY = "replay"     # trained only for a replay (`brain-tasks replay`)


# How every surface (models, dashboard, report) marks a champion whose out-of-sample result is worse
# than not trading (`brain_tasks.ml.metrics.loses_to_flat`).  It stays champion, because it is the
# reference the next candidate and the live check are measured against, and the regime classifier's
# anchor; what trades is the per-regime choice, which is flat wherever nothing beat flat.
LOSES_TO_FLAT = "not tradeable: loses to flat"
