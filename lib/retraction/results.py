"""The parts of a run's result that the actions and the CLI report alike."""
from __future__ import annotations

from typing import Any, Dict, Optional

from retraction.model import RetractionRequest


def request_fields(request: RetractionRequest, skip: Optional[bool]) -> Dict[str, Any]:
    """What was asked, in DESIGN words: the head of every run result."""
    return {
        "run_id": request.run_id,
        "message_id": request.message_id,
        "destination": request.destination.value,
        "mode": request.mode.value,
        "trigger": request.trigger.value,
        "disposition": request.disposition.value if request.disposition else None,
        "preview": request.preview,
        "skip_already_retracted": skip,
    }


def ledger_state(ledger_url: str, counts: Dict[str, Any], where_to_look: str) -> Dict[str, Any]:
    """Whether the run's outcomes are all in the ledger; `where_to_look` finishes the error."""
    if not ledger_url:
        return {"recorded": False, "error": None}
    error = None
    if counts["ledger_errors"]:
        error = "%d ledger write(s) failed: some outcomes are not recorded (%s)" % (
            counts["ledger_errors"], where_to_look)
    return {"recorded": error is None, "error": error}
