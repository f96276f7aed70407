"""`python -m retraction`: retract, restore, metrics and details from a shell, for analysts
outside StackStorm (and for the demo). Run it with the pack's `lib/` on PYTHONPATH:

    PYTHONPATH=lib python -m retraction retract '<abc@evil.example>' alice@corp.example \\
        bob@corp.example --destination junk --comment INC-42
    PYTHONPATH=lib python -m retraction restore '<abc@evil.example>' --recipients-file users.txt
    PYTHONPATH=lib python -m retraction metrics --last 7d --format markdown
    PYTHONPATH=lib python -m retraction details --last 24h --status failed --json

It reads the pack config format (`email_retraction.yaml.example`) from `--config`, else
`$EMAIL_RETRACTION_CONFIG`, else `./email_retraction.yaml`, and wires everything through
`retraction.bootstrap.build`, as the actions do. A config read outside StackStorm must hold
the secrets themselves, not `{{ st2kv... }}` references.

Output: text for people on stdout (a tqdm progress bar on stderr during a run when stderr is
a terminal, or with `--progress`). With `--json`, stdout carries exactly one JSON object: the
result, or `{"error", "field", "exit_code"}`; usage errors found by argparse go to stderr
only. Secrets are never printed: config errors name the key, URLs are masked.

`--debug` logs at DEBUG to stderr: the pack's loggers and those of its HTTP and auth
libraries (msal, urllib3, requests, google-auth, googleapiclient), every line through
`retraction.logs.SecretFilter` (configured secrets, tokens, assertions, keys and URL
passwords redacted); an internal error also prints its traceback, redacted the same way.

Exit codes:
  0    done: every copy has a definitive outcome and none failed (metrics/details: ok)
  1    the run finished, but some copies failed (see the failures and their reasons)
  2    bad input, nothing attempted: a usage error, an invalid field (the message names it)
       or a config error (the message names the key)
  3    nothing could be attempted: every provider or the ledger is unavailable
  4    internal error (a bug; --debug shows the traceback)
  130  interrupted (Ctrl-C); a run stops and is recorded as failed
  141  stdout was closed early (piped into `head`, say)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, TextIO

EXIT_OK = 0
EXIT_COPIES_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a reader that went away

CONFIG_ENV = "EMAIL_RETRACTION_CONFIG"
DEFAULT_CONFIG = "email_retraction.yaml"
PROG = "python -m retraction"

EXIT_CODES_HELP = """exit codes:
  0    done: every copy definitive and none failed (metrics/details: ok)
  1    the run finished, but some copies failed
  2    bad input: usage, an invalid field or a config error (the message names it)
  3    nothing could be attempted: providers or the ledger unavailable
  4    internal error (a bug; --debug shows the traceback)
  130  interrupted
  141  stdout closed early
"""


class Unavailable(Exception):
    """Nothing could be attempted: the ledger or every provider is out of reach (exit 3)."""


class BadInput(Exception):
    """Refused before anything was attempted; `field` names what to fix (exit 2)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument("--config", metavar="PATH",
                       help="pack config file (default: $%s, else ./%s)"
                            % (CONFIG_ENV, DEFAULT_CONFIG))
    group.add_argument("--json", action="store_true",
                       help="print one JSON object on stdout and nothing else")
    group.add_argument("--debug", action="store_true",
                       help="log at DEBUG to stderr (the pack and its HTTP and auth "
                            "libraries, secrets redacted) and show tracebacks of internal "
                            "errors")


def _filters(parser: argparse.ArgumentParser) -> None:
    window = parser.add_argument_group("window (default: the last 24h)")
    window.add_argument("--last", metavar="SPAN", help="e.g. 15m, 24h, 7d, 4w")
    window.add_argument("--since", metavar="TIME", help="ISO 8601; no offset means UTC")
    window.add_argument("--until", metavar="TIME", help="ISO 8601 (default: now)")
    narrow = parser.add_argument_group("filters")
    narrow.add_argument("--provider", metavar="NAME", help="microsoft or google")
    narrow.add_argument("--mode", metavar="MODE", help="auto or manual")
    narrow.add_argument("--trigger", metavar="WORD",
                        help="disposition, post_delivery, phish_submission or analyst")
    narrow.add_argument("--disposition", metavar="WORD",
                        help="MALICIOUS, SUSPICIOUS, SPOOF, SPAM, BULK or NONE")
    narrow.add_argument("--destination", metavar="WHERE",
                        help="inbox, junk, trash, soft_delete or hard_delete")


def _run_options(parser: argparse.ArgumentParser, restore: bool) -> None:
    parser.add_argument("message_id", help="the Message-ID header, e.g. '<abc@host.example>'")
    parser.add_argument("recipients", nargs="*", metavar="recipient",
                        help="mailbox addresses (commas allowed); '-' reads them from stdin")
    parser.add_argument("--recipients-file", metavar="PATH", action="append", default=[],
                        help="one address per line ('#' starts a comment); '-' is stdin")
    if not restore:
        parser.add_argument("--destination", metavar="WHERE",
                            help="inbox, junk, trash, soft_delete or hard_delete "
                                 "(default: the config's default_destination)")
    parser.add_argument("--mode", metavar="MODE", help="manual (default) or auto")
    parser.add_argument("--trigger", metavar="WORD",
                        help="analyst (default for manual), disposition, post_delivery or "
                             "phish_submission")
    parser.add_argument("--disposition", metavar="WORD",
                        help="MALICIOUS, SUSPICIOUS, SPOOF, SPAM, BULK or NONE")
    parser.add_argument("--verdict-time", metavar="TIME",
                        help="when the verdict was reached, ISO 8601 (no offset means UTC)")
    parser.add_argument("--comment", help="kept with every outcome in the ledger (a ticket)")
    parser.add_argument("--preview", action="store_true",
                        help="find the copies and report what would happen; move nothing")
    parser.add_argument("--provider", metavar="NAME",
                        help="force microsoft or google for every recipient (default: auto, "
                             "by domain)")
    parser.add_argument("--requested-by", metavar="WHO",
                        help="recorded in the ledger (default: your login name)")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-already-retracted", dest="skip_already_retracted",
                      action="store_const", const=True, default=None,
                      help="skip copies the ledger already shows there (default for auto)")
    skip.add_argument("--no-skip-already-retracted", dest="skip_already_retracted",
                      action="store_const", const=False,
                      help="look at every copy again (default for manual)")
    parser.add_argument("--progress", action="store_true",
                        help="show the progress bar even when stderr is not a terminal")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Retract phishing mail from Microsoft 365 and Gmail mailboxes, undo it, "
                    "and read the Retractions card and its details from the ledger.",
        epilog=EXIT_CODES_HELP)
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.required = True
    for name, restore, text in (
            ("retract", False, "take copies of a message out of mailboxes"),
            ("restore", True, "move copies of a message back to the inbox (undo)")):
        sub = commands.add_parser(name, help=text, description=text, epilog=EXIT_CODES_HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        _run_options(sub, restore)
        _common(sub)
    metrics = commands.add_parser(
        "metrics", help="the Retractions card for a window",
        description="The Retractions card (metric record) for a time window, from the ledger.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _filters(metrics)
    metrics.add_argument("--format", default="text",
                         choices=("text", "markdown", "html", "json"))
    _common(metrics)
    details = commands.add_parser(
        "details", help="the outcome rows behind the card (View details)",
        description="Outcome rows completed in a time window, newest first, paged.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _filters(details)
    rows = details.add_argument_group("rows")
    rows.add_argument("--status", metavar="WORD",
                      help="retracted, already_in_destination, previewed or failed")
    rows.add_argument("--reason", metavar="WORD",
                      help="not_found, not_a_mailbox, not_authorized, out_of_scope or "
                           "provider_error")
    rows.add_argument("--recipient", metavar="ADDRESS")
    rows.add_argument("--message-id", metavar="ID")
    rows.add_argument("--limit", type=int, default=50, help="rows per page (default 50)")
    rows.add_argument("--cursor", help="the next_cursor of the previous page")
    details.add_argument("--format", default="text", choices=("text", "markdown", "json"))
    _common(details)
    return parser


def config_path(given: Optional[str]) -> str:
    return given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def open_app(args: argparse.Namespace) -> Any:
    """The app wired from the config file, by the one composition root."""
    from retraction import logs
    from retraction.bootstrap import build
    from retraction.config import load_file

    settings = load_file(config_path(args.config))
    logs.remember(settings)  # before anything can log: redacted from every log line
    return build(settings)


def ledger_of(app: Any, required: bool) -> Any:
    """The opened ledger; None when `ledger_url` is empty and a ledger is optional. Called
    before any provider is asked, so nothing is retracted without its record."""
    from retraction.config import ConfigError

    if not app.settings.ledger_url:
        if required:
            raise ConfigError("ledger_url", "is empty: metrics and details are read from the "
                                            "ledger")
        return None
    # A ledger that cannot be opened raises LedgerUnavailable (exit 3) from here.
    return app.ledger


def read_recipients(args: argparse.Namespace, stdin: TextIO) -> List[str]:
    """Addresses from the arguments, `--recipients-file` files and stdin (`-`), in order.
    Validation happens later, with the rest of the request, so errors name `recipients`."""
    found: List[str] = []
    sources = list(args.recipients_file)
    for value in args.recipients:
        if value == "-":
            sources.append("-")
        else:
            found.append(value)
    for source in sources:
        if source == "-":
            lines = stdin.read().splitlines()
        else:
            try:
                with open(source, encoding="utf-8") as handle:
                    lines = handle.read().splitlines()
            except OSError as exc:
                raise BadInput("recipients_file", "cannot read %s: %s"
                               % (source, exc.strerror)) from None
            except UnicodeDecodeError:
                raise BadInput("recipients_file", "%s is not UTF-8 text" % source) from None
        for line in lines:
            text = line.strip()
            if text and not text.startswith("#"):
                found.append(text)
    return found


def emit(out: TextIO, data: Any) -> None:
    out.write(json.dumps(data, indent=2, sort_keys=False, default=str))
    out.write("\n")


def _error_object(field: Optional[str], message: str, code: int) -> Dict[str, Any]:
    return {"error": message, "field": field, "exit_code": code}


def main(argv: Optional[Sequence[str]] = None, stdin: Optional[TextIO] = None,
         stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)  # usage errors: SystemExit(2), message on stderr
    if args.debug:
        import logging

        from retraction import logs

        logs.configure(logging.DEBUG, stderr)

    def fail(code: int, field: Optional[str], message: str) -> int:
        stderr.write("%s: error: %s\n" % (PROG, message))
        if args.json:
            emit(stdout, _error_object(field, message, code))
        return code

    from retraction.config import ConfigError, mask_url
    from retraction.engine import LedgerUnavailable
    from retraction.metrics.errors import InvalidParameter
    from retraction.validation import InvalidRequest

    try:
        if args.command in ("retract", "restore"):
            from retraction.cli_run import run_command
            return run_command(args, stdin, stdout, stderr)
        from retraction.cli_report import report_command
        return report_command(args, stdout)
    except LedgerUnavailable as exc:  # a ConfigError too, but nothing was wrong with input
        return fail(EXIT_UNAVAILABLE, exc.key, str(exc))
    except InvalidRequest as exc:
        return fail(EXIT_BAD_INPUT, exc.field, str(exc))
    except InvalidParameter as exc:
        return fail(EXIT_BAD_INPUT, exc.field, "invalid %s: %s" % (exc.field, exc.message))
    except ConfigError as exc:
        return fail(EXIT_BAD_INPUT, exc.key, str(exc))
    except BadInput as exc:
        return fail(EXIT_BAD_INPUT, exc.field, "invalid %s: %s" % (exc.field, exc))
    except Unavailable as exc:
        return fail(EXIT_UNAVAILABLE, None, str(exc))
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, None, "interrupted")
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # a bug: say what, never a secret-bearing repr of the config
        if args.debug:
            import traceback

            from retraction.logs import SECRETS

            stderr.write(SECRETS.redact(traceback.format_exc()))
        return fail(EXIT_INTERNAL, None, "internal error: %s: %s"
                    % (type(exc).__name__, mask_url(str(exc))[:500]))
