"""`retract` and `restore` for the command line: arguments -> request -> engine -> the run's
card. Validation, policy and the run itself are the core's (the same code as the actions);
this module only streams the run through a progress bar and shapes what is printed."""
from __future__ import annotations

import argparse
import getpass
from typing import Any, Dict, Iterator, List, Optional, TextIO

from retraction.cli import (EXIT_COPIES_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNAVAILABLE,
                            PROG, emit, ledger_of, open_app, read_recipients)
from retraction.metrics import record_from_outcomes, render_card
from retraction.model import Outcome, Status
from retraction.results import ledger_state, request_fields
from retraction.validation import build_request, skip_flag

SHOWN_FAILURES = 20  # failed copies listed in the text output; --json has them all
PROGRESS_DELAY_S = 1.0  # a bar appears only on runs longer than this (unless --progress)


def request_params(args: argparse.Namespace, stdin: TextIO) -> Dict[str, Any]:
    """The action's parameters, from the command line (same names, same validation)."""
    params = {
        "message_id": args.message_id,
        "recipients": read_recipients(args, stdin),
        "destination": "inbox" if args.command == "restore" else args.destination,
        "mode": args.mode,
        "trigger": args.trigger,
        "disposition": args.disposition,
        "verdict_time": args.verdict_time,
        "comment": args.comment,
        "preview": args.preview,
        "provider": args.provider,
        "requested_by": args.requested_by or _login(),
    }
    if args.skip_already_retracted is not None:
        params["skip_already_retracted"] = args.skip_already_retracted
    return params


def _login() -> Optional[str]:
    try:
        return getpass.getuser()
    except Exception:  # no login name in a bare container: record nobody rather than fail
        return None


def _bar(total: int, forced: bool, stderr: TextIO, label: str) -> Any:
    """A tqdm bar on stderr when a person is watching (or --progress); None otherwise."""
    if not forced and not (hasattr(stderr, "isatty") and stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="copy", desc=label, file=stderr, dynamic_ncols=True,
                delay=0 if forced else PROGRESS_DELAY_S, leave=forced)


def run_command(args: argparse.Namespace, stdin: TextIO, stdout: TextIO,
                stderr: TextIO) -> int:
    params = request_params(args, stdin)
    app = open_app(args)
    closing = True
    try:
        request = build_request(params, app.settings)
        app.policy.admit(request)  # request-wide refusals are bad input too
        skip = app.policy.skip_already_retracted(request.mode, skip_flag(params))
        ledger_of(app, required=False)  # no ledger, no run: nothing moves without a record
        run = app.engine().run(request, skip_already_retracted=skip)
        label = "preview" if request.preview else args.command
        bar = _bar(len(request.recipients), args.progress, stderr, label)
        keep_all = bool(args.json)
        kept: List[Dict[str, Any]] = []
        failures: List[Outcome] = []

        def stream() -> Iterator[Outcome]:
            for outcome in run:
                if keep_all:
                    kept.append(outcome.to_dict())
                if outcome.status == Status.FAILED and len(failures) < SHOWN_FAILURES:
                    failures.append(outcome)
                if bar is not None:
                    bar.total = max(bar.total, run.counts.total)  # group members join
                    bar.update(1)
                yield outcome

        try:
            record = record_from_outcomes(stream(), preview=request.preview)
        except KeyboardInterrupt:
            run.close()  # cancels the run's threads; the ledger marks the run failed
            if bar is not None:
                bar.close()
            done = run.counts.total
            stderr.write("%s: interrupted after %d of %d copies; run %s is recorded as "
                         "failed. Copies in flight may have moved: run the same command again "
                         "to record them (reruns move nothing twice)\n"
                         % (PROG, done, len(request.recipients), request.run_id))
            if args.json:
                emit(stdout, {"error": "interrupted", "field": None, "run_id": request.run_id,
                              "counts": run.counts.to_dict(), "exit_code": EXIT_INTERRUPTED})
            closing = False  # providers may be stuck in network calls: do not wait for them
            return EXIT_INTERRUPTED
        if bar is not None:
            bar.close()
        counts = run.counts.to_dict()
        code, error = _verdict(run.counts.nothing_attempted, counts)
        card = render_card(record, "text", title=_title(request))
        ledger = _ledger_state(app, counts)
        if args.json:
            result = request_fields(request, skip)
            result.update(counts=counts, metric_record=record.to_dict(), card=card,
                          outcomes=kept, ledger=ledger, error=error, exit_code=code)
            emit(stdout, result)
        else:
            stdout.write(_text(request, counts, card, failures, ledger))
        if error:
            stderr.write("%s: error: %s\n" % (PROG, error))
        if ledger["error"]:
            stderr.write("%s: warning: %s\n" % (PROG, ledger["error"]))
        return code
    finally:
        if closing:
            app.close()


def _verdict(nothing_attempted: bool, counts: Dict[str, Any]):
    """(exit code, error text) of a finished run."""
    # Unavailable only when providers were out of reach for every copy that needed one
    # (`RunCounts.nothing_attempted`); copies refused by policy are failed copies (exit 1).
    if nothing_attempted:
        return EXIT_UNAVAILABLE, "no copy could be attempted: " + _summary(counts)
    if counts["by_status"].get(Status.FAILED.value):
        return EXIT_COPIES_FAILED, None
    return EXIT_OK, None


def _summary(counts: Dict[str, Any]) -> str:
    parts = ["%d %s" % (n, status) for status, n in counts["by_status"].items()]
    reasons = ", ".join("%d %s" % (n, reason) for reason, n in counts["by_reason"].items())
    text = ", ".join(parts) or "no copies"
    return text + (" (%s)" % reasons if reasons else "")


def _title(request: Any) -> str:
    if request.preview:
        return "Retraction preview"
    return "Restore" if request.destination.value == "inbox" else "Retraction"


def _ledger_state(app: Any, counts: Dict[str, Any]) -> Dict[str, Any]:
    return ledger_state(app.settings.ledger_url, counts, "--debug shows why")


def _text(request: Any, counts: Dict[str, Any], card: str, failures: List[Outcome],
          ledger: Dict[str, Any]) -> str:
    how = "%s, %s" % (request.mode.value, request.trigger.value)
    if request.disposition:
        how += ", " + request.disposition.value
    lines = ["%s %s -> %s (%s)" % ("Previewed" if request.preview else "Run",
                                   request.message_id, request.destination.value, how),
             "run_id: %s" % request.run_id, ""]
    lines.append(card.rstrip("\n"))
    if counts["skipped"]:
        lines.append("Answered from the ledger (already there, not looked up again): %d"
                     % counts["skipped"])
    failed = counts["by_status"].get(Status.FAILED.value, 0)
    if failures:
        lines += ["", "Failed copies (%d):" % failed]
        width = max(len(o.recipient) for o in failures)
        for outcome in failures:
            why = outcome.error_message or ""
            if outcome.error_code:
                why = "%s: %s" % (outcome.error_code, why) if why else outcome.error_code
            via = " (via %s)" % outcome.via_group if outcome.via_group else ""
            lines.append("  %s  %-14s  %s%s" % (outcome.recipient.ljust(width), outcome.reason,
                                                _short(why, 90), via))
        if failed > len(failures):
            lines.append("  ... and %d more: %s details --status failed --message-id '%s'"
                         % (failed - len(failures), PROG, request.message_id))
    if ledger["recorded"]:
        lines += ["", "Recorded in the ledger."]
    elif not ledger["error"]:
        lines += ["", "Not recorded: no ledger_url in the config."]
    return "\n".join(lines) + "\n"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
