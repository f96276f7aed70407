"""The engine's own logic: dedupe, policy refusals, concurrency between providers, group
expansion, ProviderUnavailable, streaming with bounded memory, counts, the ledger hook.

Providers here are `MemoryProvider`, a MailProvider over an in-memory set of mailboxes. It is
a test double of the interface this pack owns (base.MailProvider), not a patch of an SDK: it
pulls targets lazily, works a batch at a time on its own thread pool, answers in completion
order, and can fail in every way the contract allows. The real providers are exercised
against the sandbox tenant in their own tests and in tests/test_action_*.py.
"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import pytest

from retraction.config import load_settings
from retraction.engine import (OUT_QUEUE_SIZE, SKIP_LOOKUP_CHUNK, Engine, LedgerUnavailable,
                               RunCounts)
from retraction.model import (
    Destination, Disposition, Mode, Outcome, Reason, RetractionRequest, Status, Trigger)
from retraction.policy import Policy
from retraction.providers.base import MailProvider, ProviderUnavailable
from retraction.validation import InvalidRequest

MSGID = "<phish-1@attacker.example>"
FOLDER_OF = {"inbox": "inbox", "junk": "junk", "trash": "trash", "soft_delete": "recoverable"}


class MemoryProvider(MailProvider):
    """Mailboxes: address(lower) -> {message_id: [folder, read]}. Groups: address -> members."""

    def __init__(self, name, mailboxes=None, groups=None, batch=20, workers=4, delay=0.0):
        self.name = name
        self.mailboxes = {k.lower(): v for k, v in (mailboxes or {}).items()}
        self.groups = {k.lower(): v for k, v in (groups or {}).items()}
        self.batch, self.workers, self.delay = batch, workers, delay
        self.denied = set()  # addresses whose mailbox refuses the app
        self.unavailable_after = None  # raise ProviderUnavailable after this many outcomes
        self.crash_after = None  # raise RuntimeError after this many outcomes
        self.expand_fails = set()
        self.pulled = 0
        self.asked = []  # every recipient this provider was asked about
        self.expanded = []
        self.gate = None  # an Event retract waits on before its first answer
        self.hold = None  # an Event retract waits on after its first answer
        self.first_answer = threading.Event()
        self.lock = threading.Lock()

    def _one(self, request, target):
        if self.delay:
            time.sleep(self.delay)
        key = target.recipient.lower()

        def outcome(status, reason=None, **kw):
            return Outcome(run_id=request.run_id, message_id=request.message_id,
                           recipient=target.recipient, provider=self.name,
                           destination=request.destination.value, mode=request.mode.value,
                           trigger=request.trigger.value, status=status, reason=reason,
                           via_group=target.via_group, **kw)

        if key in self.groups or key not in self.mailboxes:
            return outcome("failed", "not_a_mailbox", error_code="ErrorInvalidUser")
        if key in self.denied:
            return outcome("failed", "not_authorized", error_code="ErrorAccessDenied")
        with self.lock:
            copy = self.mailboxes[key].get(request.message_id)
            if copy is None:
                return outcome("failed", "not_found")
            folder, read = copy
            wanted = FOLDER_OF[request.destination.value]
            if folder == wanted:
                return outcome("already_in_destination", source_folder=folder)
            if request.preview:
                return outcome("previewed", was_read=read, source_folder=folder)
            copy[0] = wanted
        return outcome("retracted", was_read=read, source_folder=folder)

    def retract(self, request, targets):
        if self.gate is not None and not self.gate.wait(5):
            raise AssertionError("gate never opened: providers did not run concurrently")
        answered = 0
        iterator = iter(targets)
        with ThreadPoolExecutor(self.workers) as pool:
            while True:
                batch = []
                for target in iterator:
                    batch.append(target)
                    with self.lock:
                        self.pulled += 1
                        self.asked.append(target.recipient)
                    if len(batch) >= self.batch:
                        break
                if not batch:
                    return
                futures = [pool.submit(self._one, request, t) for t in batch]
                for future in as_completed(futures):
                    if self.unavailable_after is not None and answered >= self.unavailable_after:
                        raise ProviderUnavailable("not_authorized", "invalid_client",
                                                  "AADSTS7000215: Invalid client secret")
                    if self.crash_after is not None and answered >= self.crash_after:
                        raise RuntimeError("socket exploded")
                    answered += 1
                    self.first_answer.set()
                    yield future.result()
                    if answered == 1 and self.hold is not None and not self.hold.wait(5):
                        raise AssertionError("providers did not run concurrently")

    def expand_group(self, address):
        self.expanded.append(address)
        if address.lower() in self.expand_fails:
            raise ProviderUnavailable("provider_error", "ServiceUnavailable", "try later")
        return self.groups.get(address.lower())


class RecordingLedger:
    """The ledger interface the engine calls, recording every call. (The skip list reads the
    real ledger's tables: tests of skipping use `retraction.ledger.Ledger`.)"""

    def __init__(self, fail=False, fail_start=None):
        self.started, self.finished, self.batches = [], [], []
        self.fail = fail
        self.fail_start = fail_start

    def record_run_started(self, request):
        if self.fail_start is not None:
            raise self.fail_start
        self.started.append(request.run_id)

    def record_outcomes(self, outcomes):
        if self.fail:
            raise ConnectionError("database is down")
        self.batches.append(list(outcomes))

    def record_run_finished(self, run_id, state="finished"):
        self.finished.append((run_id, state))


CONFIG = {
    "microsoft": {"domains": ["corp.example"]},
    "google": {"domains": ["corp-mail.example"]},
    "protected_mailboxes": ["journal@corp.example"],
    "allow_hard_delete": False,
}


def request_for(recipients, **kw):
    if not isinstance(recipients, tuple):
        recipients = tuple(recipients)
    base = dict(message_id=MSGID, recipients=recipients, destination=Destination.JUNK)
    base.update(kw)
    return RetractionRequest(**base)


def engine_with(providers, config=CONFIG, ledger=None):
    settings = load_settings(config)
    return Engine(providers, Policy(settings), ledger=ledger, limits=settings.limits)


def by_recipient(outcomes):
    result = {}
    for outcome in outcomes:
        assert outcome.recipient not in result, "two outcomes for %s" % outcome.recipient
        result[outcome.recipient] = outcome
    return result


def mailbox(folder="inbox", read=False, message_id=MSGID):
    return {message_id: [folder, read]}


def test_statuses_and_read_state():
    ms = MemoryProvider("microsoft", {
        "alice@corp.example": mailbox("inbox", read=True),
        "bob@corp.example": mailbox("junk"),
        "carol@corp.example": {},
        "dave@corp.example": mailbox("trash", read=False),
    })
    ms.denied.add("eve@corp.example")
    ms.mailboxes["eve@corp.example"] = mailbox()
    run = engine_with({"microsoft": ms}).run(request_for(
        ["alice@corp.example", "bob@corp.example", "carol@corp.example", "dave@corp.example",
         "eve@corp.example"]))
    got = by_recipient(run)
    assert got["alice@corp.example"].status == "retracted"
    assert got["alice@corp.example"].was_read is True
    assert got["alice@corp.example"].source_folder == "inbox"
    assert got["bob@corp.example"].status == "already_in_destination"
    assert (got["carol@corp.example"].status, got["carol@corp.example"].reason) == \
        ("failed", "not_found")
    assert got["dave@corp.example"].status == "retracted"
    assert got["dave@corp.example"].was_read is False
    assert got["eve@corp.example"].reason == "not_authorized"
    assert ms.mailboxes["alice@corp.example"][MSGID][0] == "junk"
    counts = run.counts.to_dict()
    assert counts["total"] == 5 and counts["attempted"] == 5
    assert counts["by_status"] == {"already_in_destination": 1, "failed": 2, "retracted": 2}
    assert counts["by_reason"] == {"not_authorized": 1, "not_found": 1}
    assert counts["read"] == 1 and counts["unread"] == 1
    assert run.finished


def test_preview_moves_nothing():
    ms = MemoryProvider("microsoft", {"alice@corp.example": mailbox("inbox")})
    got = list(engine_with({"microsoft": ms}).run(
        request_for(["alice@corp.example"], preview=True)))
    assert [o.status for o in got] == ["previewed"]
    assert ms.mailboxes["alice@corp.example"][MSGID][0] == "inbox"


def test_duplicates_collapse_case_insensitively():
    ms = MemoryProvider("microsoft", {"alice@corp.example": mailbox()})
    got = list(engine_with({"microsoft": ms}).run(request_for(
        ["Alice@corp.example", "alice@CORP.example", "ALICE@corp.example"])))
    assert [o.recipient for o in got] == ["Alice@corp.example"]
    assert ms.asked == ["Alice@corp.example"]


def test_protected_and_unknown_domains_are_out_of_scope_without_a_provider_call():
    ms = MemoryProvider("microsoft", {"alice@corp.example": mailbox(),
                                      "journal@corp.example": mailbox()})
    run = engine_with({"microsoft": ms}).run(request_for(
        ["journal@corp.example", "alice@corp.example", "x@elsewhere.example"]))
    got = by_recipient(run)
    journal, stranger = got["journal@corp.example"], got["x@elsewhere.example"]
    assert (journal.status, journal.reason, journal.error_code) == \
        ("failed", "out_of_scope", "protected_mailbox")
    assert journal.provider == "microsoft" and journal.attempts == 0
    assert "protected" in journal.error_message
    assert (stranger.reason, stranger.provider, stranger.error_code) == \
        ("out_of_scope", None, "domain_not_configured")
    assert "elsewhere.example" in stranger.error_message
    assert ms.asked == ["alice@corp.example"]
    assert ms.mailboxes["journal@corp.example"][MSGID][0] == "inbox"
    assert run.counts.attempted == 1 and run.counts.total == 3


def test_only_out_of_scope_builds_no_provider():
    class NoProviders(dict):
        def __getitem__(self, name):
            raise AssertionError("no provider should be built")

    run = engine_with(NoProviders()).run(request_for(["journal@corp.example",
                                                      "x@elsewhere.example"]))
    assert [o.reason for o in run] == ["out_of_scope", "out_of_scope"]
    assert run.counts.attempted == 0


def test_hard_delete_refused_before_anything():
    built = []

    class Watch(dict):
        def __getitem__(self, name):
            built.append(name)
            return dict.__getitem__(self, name)

    engine = engine_with(Watch(microsoft=MemoryProvider("microsoft")))
    with pytest.raises(InvalidRequest) as caught:
        engine.run(request_for(["alice@corp.example"], destination=Destination.HARD_DELETE))
    assert caught.value.field == "destination"
    assert built == []


def test_outcomes_carry_the_request():
    ms = MemoryProvider("microsoft", {"alice@corp.example": mailbox()})
    req = request_for(["alice@corp.example", "x@elsewhere.example"], mode=Mode.AUTO,
                      trigger=Trigger.POST_DELIVERY, disposition=Disposition.MALICIOUS,
                      destination=Destination.TRASH, comment="INC-7", requested_by="rule")
    got = by_recipient(engine_with({"microsoft": ms}).run(req))
    refused = got["x@elsewhere.example"]
    assert refused.run_id == req.run_id and refused.message_id == MSGID
    assert (refused.mode, refused.trigger, refused.destination, refused.disposition) == \
        ("auto", "post_delivery", "trash", "MALICIOUS")
    assert refused.comment == "INC-7" and refused.requested_by == "rule"
    assert refused.requested_at == req.requested_at
    assert Outcome.from_dict(refused.to_dict()) == refused


def test_providers_run_concurrently():
    ms = MemoryProvider("microsoft", {"a%d@corp.example" % i: mailbox() for i in range(50)})
    gm = MemoryProvider("google", {"g%d@corp-mail.example" % i: mailbox() for i in range(50)})
    # Microsoft answers once, then waits for Google's first answer; Google starts only after
    # Microsoft's first answer. Run one after the other, they would wait forever (5 s, then
    # the gate fails the copies); run concurrently, both finish.
    ms.hold = gm.first_answer
    gm.gate = ms.first_answer
    recipients = ["a%d@corp.example" % i for i in range(50)] + \
        ["g%d@corp-mail.example" % i for i in range(50)]
    got = list(engine_with({"microsoft": ms, "google": gm}).run(request_for(recipients)))
    assert len(got) == 100
    assert all(o.status == "retracted" for o in got), {o.error_message for o in got}
    assert {o.provider for o in got} == {"microsoft", "google"}


def test_group_expansion():
    ms = MemoryProvider("microsoft", {
        "alice@corp.example": mailbox(), "bob@corp.example": mailbox(),
        "journal@corp.example": mailbox()},
        groups={"all@corp.example": ["Bob@corp.example", "alice@corp.example",
                                     "journal@corp.example", "gina@corp-mail.example",
                                     "x@elsewhere.example", "bad member@corp.example"]})
    gm = MemoryProvider("google", {"gina@corp-mail.example": mailbox()})
    run = engine_with({"microsoft": ms, "google": gm}).run(
        request_for(["alice@corp.example", "all@corp.example"]))
    got = by_recipient(run)
    group = got["all@corp.example"]
    assert (group.status, group.reason) == ("failed", "not_a_mailbox")
    assert got["alice@corp.example"].via_group is None  # a recipient in its own right
    assert got["Bob@corp.example"].status == "retracted"
    assert got["Bob@corp.example"].via_group == "all@corp.example"
    assert got["gina@corp-mail.example"].provider == "google"
    assert got["gina@corp-mail.example"].via_group == "all@corp.example"
    assert got["journal@corp.example"].reason == "out_of_scope"
    assert got["journal@corp.example"].via_group == "all@corp.example"
    assert got["x@elsewhere.example"].reason == "out_of_scope"
    assert got["bad member@corp.example"].error_code == "invalid_address"
    assert ms.asked.count("alice@corp.example") == 1
    assert ms.expanded == ["all@corp.example"]
    assert len(got) == 7 and run.counts.total == 7


def test_nested_and_cyclic_groups_terminate():
    ms = MemoryProvider("microsoft", {"a@corp.example": mailbox(), "b@corp.example": mailbox()},
                        groups={"g1@corp.example": ["g2@corp.example", "a@corp.example"],
                                "g2@corp.example": ["g1@corp.example", "b@corp.example"]})
    got = by_recipient(engine_with({"microsoft": ms}).run(request_for(["g1@corp.example"])))
    assert set(got) == {"g1@corp.example", "g2@corp.example", "a@corp.example",
                        "b@corp.example"}
    assert got["b@corp.example"].via_group == "g2@corp.example"
    assert sorted(ms.expanded) == ["g1@corp.example", "g2@corp.example"]


def test_no_expansion_when_off_or_when_expand_fails():
    groups = {"all@corp.example": ["alice@corp.example"]}
    ms = MemoryProvider("microsoft", {"alice@corp.example": mailbox()}, groups=groups)
    got = list(engine_with({"microsoft": ms}, dict(CONFIG, expand_groups=False)).run(
        request_for(["all@corp.example"])))
    assert [o.reason for o in got] == ["not_a_mailbox"] and ms.expanded == []
    ms.expand_fails.add("all@corp.example")
    got = list(engine_with({"microsoft": ms}).run(request_for(["all@corp.example"])))
    assert [o.reason for o in got] == ["not_a_mailbox"]
    assert ms.expanded == ["all@corp.example"]


def test_provider_unavailable_fails_the_rest_of_its_copies():
    n = 300
    ms = MemoryProvider("microsoft", {"a%d@corp.example" % i: mailbox() for i in range(n)},
                        batch=10)
    ms.unavailable_after = 25
    gm = MemoryProvider("google", {"g@corp-mail.example": mailbox()})
    recipients = ["a%d@corp.example" % i for i in range(n)] + ["g@corp-mail.example"]
    run = engine_with({"microsoft": ms, "google": gm}).run(request_for(recipients))
    got = by_recipient(run)
    assert len(got) == n + 1
    assert got["g@corp-mail.example"].status == "retracted"
    ms_outcomes = [o for o in got.values() if o.provider == "microsoft"]
    retracted = [o for o in ms_outcomes if o.status == "retracted"]
    failed = [o for o in ms_outcomes if o.status == "failed"]
    assert len(retracted) == 25 and len(failed) == n - 25
    for outcome in failed:
        assert (outcome.reason, outcome.error_code, outcome.attempts) == \
            ("not_authorized", "invalid_client", 0)
        assert "AADSTS7000215" in outcome.error_message
    assert run.counts.attempted == 26
    assert ms.pulled < n  # the rest were failed without reaching the provider


def test_provider_that_cannot_be_built():
    class Broken(dict):
        def __getitem__(self, name):
            if name == "google":
                raise ProviderUnavailable("not_authorized", "ConfigError",
                                          "config google.service_account_json: is required")
            return dict.__getitem__(self, name)

    ms = MemoryProvider("microsoft", {"a@corp.example": mailbox()})
    got = by_recipient(engine_with(Broken(microsoft=ms)).run(request_for(
        ["g1@corp-mail.example", "a@corp.example", "g2@corp-mail.example"])))
    assert got["a@corp.example"].status == "retracted"
    for name in ("g1@corp-mail.example", "g2@corp-mail.example"):
        assert (got[name].reason, got[name].error_code, got[name].attempts) == \
            ("not_authorized", "ConfigError", 0)
        assert got[name].provider == "google"


def test_missing_provider_is_out_of_scope():
    got = list(engine_with({}).run(request_for(["a@corp.example"])))
    assert [(o.reason, o.error_code) for o in got] == [("out_of_scope", "ProviderNotConfigured")]


def test_provider_crash_is_a_provider_error():
    ms = MemoryProvider("microsoft", {"a%d@corp.example" % i: mailbox() for i in range(30)},
                        batch=5)
    ms.crash_after = 7
    got = list(engine_with({"microsoft": ms}).run(
        request_for(["a%d@corp.example" % i for i in range(30)])))
    assert len(got) == 30
    crashed = [o for o in got if o.status == "failed"]
    assert len(crashed) == 23
    assert {(o.reason, o.error_code) for o in crashed} == {("provider_error", "RuntimeError")}
    assert "socket exploded" in crashed[0].error_message


def test_contract_violations_are_contained():
    class Sloppy(MemoryProvider):
        def retract(self, request, targets):
            targets = iter(targets)
            first = next(targets)
            yield self._one(request, first)
            yield self._one(request, first)  # twice
            stranger = type(first)("nobody@corp.example")
            yield self._one(request, stranger)  # never asked
            # and then stops pulling: the rest never get an answer from the provider

    ms = Sloppy("microsoft", {"a%d@corp.example" % i: mailbox() for i in range(5)})
    got = by_recipient(engine_with({"microsoft": ms}).run(
        request_for(["a%d@corp.example" % i for i in range(5)])))
    assert set(got) == {"a%d@corp.example" % i for i in range(5)}
    assert got["a0@corp.example"].status == "retracted"
    assert {got["a%d@corp.example" % i].error_code for i in range(1, 5)} == {"NoOutcome"}


class CountingTuple(tuple):
    """Recipients that count how far the engine has read them."""

    read = 0

    def __iter__(self):
        for item in tuple.__iter__(self):
            type(self).read += 1
            yield item


def test_streaming_with_bounded_memory():
    n = 6000
    ms = MemoryProvider("microsoft", {"a%d@corp.example" % i: mailbox() for i in range(n)},
                        batch=50)
    engine = engine_with({"microsoft": ms})
    CountingTuple.read = 0
    run = engine.run(request_for(CountingTuple("a%d@corp.example" % i for i in range(n))))
    first = next(run)
    assert first.status == "retracted"
    time.sleep(0.5)  # let the pipeline fill up while nobody reads
    # The provider is blocked on the full out queue, the feeder on the full lane: what has
    # been read is what is in flight, not the whole run.
    assert ms.pulled <= OUT_QUEUE_SIZE + ms.batch + 1
    in_lane = CountingTuple.read - ms.pulled
    assert in_lane <= engine.lane_capacity + SKIP_LOOKUP_CHUNK
    assert CountingTuple.read < n
    rest = list(run)
    assert len(rest) == n - 1 and ms.pulled == n
    assert run.counts.total == n


def test_closing_early_stops_the_threads():
    n = 5000
    ms = MemoryProvider("microsoft", {"a%d@corp.example" % i: mailbox() for i in range(n)})
    ledger = RecordingLedger()
    run = engine_with({"microsoft": ms}, ledger=ledger).run(
        request_for(["a%d@corp.example" % i for i in range(n)]))
    for _ in zip(range(10), run):
        pass
    run.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(
            t.name.startswith("retraction-") for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("retraction-")]
    assert not run.finished
    assert ledger.finished == [(run.run_id, "failed")]
    assert sum(len(b) for b in ledger.batches) == 10


def test_ledger_hook_records_everything_once_in_batches():
    n = 450
    ms = MemoryProvider("microsoft", {"a%d@corp.example" % i: mailbox() for i in range(n)})
    ledger = RecordingLedger()
    run = engine_with({"microsoft": ms}, ledger=ledger).run(
        request_for(["a%d@corp.example" % i for i in range(n)] + ["x@elsewhere.example"]))
    outcomes = list(run)
    recorded = [o for batch in ledger.batches for o in batch]
    assert sorted(o.recipient for o in recorded) == sorted(o.recipient for o in outcomes)
    assert len(ledger.batches) >= 3 and max(len(b) for b in ledger.batches) <= 200
    assert ledger.started == [run.run_id]
    assert ledger.finished == [(run.run_id, "finished")]
    # skip off: the skip list is never read (this ledger has no tables: a read would fail)
    assert run.counts.ledger_errors == 0


def test_ledger_skip_answers_every_copy_from_the_ledger(tmp_path):
    from retraction.ledger import Ledger

    ms = MemoryProvider("microsoft", {"a@corp.example": mailbox(), "b@corp.example": mailbox(),
                                      "c@corp.example": mailbox("junk")},
                        groups={"g@corp.example": ["c@corp.example", "a@corp.example"]})
    with Ledger("sqlite:///%s" % (tmp_path / "ledger.db")) as ledger:
        engine = engine_with({"microsoft": ms}, ledger=ledger)
        first = engine.run(request_for(["A@corp.example", "c@corp.example"]))
        assert sorted(o.status for o in first) == ["already_in_destination", "retracted"]
        ms.asked.clear()
        run = engine.run(request_for(["a@corp.example", "b@corp.example", "g@corp.example"]),
                         skip_already_retracted=True)
        got = by_recipient(run)
        # every copy asked for has its outcome: a directly, c through the group
        assert set(got) == {"a@corp.example", "b@corp.example", "g@corp.example",
                            "c@corp.example"}
        assert run.counts.skipped == 2 and run.counts.total == 4
        assert ms.asked == ["b@corp.example", "g@corp.example"]
        for address, why in (("a@corp.example", "retracted earlier by run %s"),
                             ("c@corp.example", "found in junk earlier by run %s")):
            outcome = got[address]
            assert (outcome.status, outcome.attempts, outcome.provider) == \
                ("already_in_destination", 0, "microsoft")
            assert outcome.error_code == "skipped_already_retracted"
            assert outcome.error_message.startswith(why % first.run_id + "; ")
        assert got["c@corp.example"].via_group == "g@corp.example"
        assert got["a@corp.example"].via_group is None


def test_ledger_failure_does_not_stop_the_run():
    ms = MemoryProvider("microsoft", {"a@corp.example": mailbox()})
    run = engine_with({"microsoft": ms}, ledger=RecordingLedger(fail=True)).run(
        request_for(["a@corp.example"]))
    assert [o.status for o in run] == ["retracted"]
    assert run.counts.ledger_errors == 1


def test_run_counts_dict():
    counts = RunCounts()
    base = dict(run_id="r", message_id=MSGID, recipient="a@x.example", provider="google",
                destination="junk", mode="manual", trigger="analyst")
    counts.add(Outcome(status="retracted", was_read=True, **base))
    counts.add(Outcome(status="failed", reason="not_found", **base))
    counts.add(Outcome(status="failed", reason="out_of_scope", attempts=0,
                       **dict(base, provider=None)))
    assert counts.to_dict() == {
        "total": 3, "attempted": 2, "skipped": 0,
        "by_status": {"failed": 2, "retracted": 1},
        "by_reason": {"not_found": 1, "out_of_scope": 1},
        "by_provider": {"google": 2, "none": 1}, "read": 1, "unread": 0, "ledger_errors": 0}
    assert Status.RETRACTED == "retracted" and Reason.NOT_FOUND == "not_found"


def test_with_the_real_ledger(tmp_path):
    from retraction.ledger import Ledger

    ledger = Ledger("sqlite:///%s" % (tmp_path / "ledger.db"))
    try:
        ms = MemoryProvider("microsoft", {"a@corp.example": mailbox(),
                                          "b@corp.example": mailbox("junk")})
        engine = engine_with({"microsoft": ms}, ledger=ledger)
        first = engine.run(request_for(["a@corp.example", "b@corp.example",
                                        "x@elsewhere.example"]))
        assert sorted(o.status for o in first) == ["already_in_destination", "failed",
                                                   "retracted"]
        assert {o.recipient for o in ledger.outcomes_for_run(first.run_id)} == \
            {"a@corp.example", "b@corp.example", "x@elsewhere.example"}
        assert ledger.run(first.run_id)["state"] == "finished"
        # The same request again, skipping what the ledger shows in junk: nothing to do.
        again = engine.run(request_for(["A@corp.example", "b@corp.example",
                                        "x@elsewhere.example"]), skip_already_retracted=True)
        got = by_recipient(again)
        assert {r: (o.status, o.reason, o.attempts) for r, o in got.items()} == {
            "A@corp.example": ("already_in_destination", None, 0),
            "b@corp.example": ("already_in_destination", None, 0),
            "x@elsewhere.example": ("failed", "out_of_scope", 0)}
        assert again.counts.skipped == 2 and again.counts.attempted == 0
        assert ms.asked == ["a@corp.example", "b@corp.example"]
        # The rerun's own record shows every copy it was asked for; the window counts each
        # copy once (the first run's rows), whatever the reruns said.
        record = ledger.run(again.run_id)["metric_record"]
        assert (record["total"], record["already_in_destination"], record["failed"]) == (3, 2, 1)
        window = ledger.metric_record().to_dict()
        assert (window["total"], window["retracted"], window["already_in_destination"],
                window["failed"]) == (3, 1, 1, 1)
        counted = {(row["run_id"], row["recipient"]) for row in ledger.details()[0]
                   if row["counted"]}
        assert counted == {(first.run_id, "a@corp.example"), (first.run_id, "b@corp.example"),
                           (first.run_id, "x@elsewhere.example")}
    finally:
        ledger.close()


def test_a_ledger_that_cannot_record_the_start_stops_the_run_before_any_provider():
    ms = MemoryProvider("microsoft", {"a@corp.example": mailbox()})
    ledger = RecordingLedger(fail_start=ConnectionError(
        "could not connect to postgresql://ledger:s3cret@db.example/ledger"))
    with pytest.raises(LedgerUnavailable) as caught:
        engine_with({"microsoft": ms}, ledger=ledger).run(request_for(["a@corp.example"]))
    assert caught.value.key == "ledger_url"
    assert "s3cret" not in str(caught.value) and "ledger:***@db.example" in str(caught.value)
    assert ms.asked == [] and ledger.batches == []
    assert not [t for t in threading.enumerate() if t.name.startswith("retraction-")]


def test_a_chunk_records_its_outcomes_and_leaves_the_run_open():
    ms = MemoryProvider("microsoft", {"a@corp.example": mailbox(), "b@corp.example": mailbox()})
    ledger = RecordingLedger()
    run = engine_with({"microsoft": ms}, ledger=ledger).run(
        request_for(["a@corp.example", "b@corp.example"]), finish=False)
    assert sorted(o.status for o in run) == ["retracted", "retracted"]
    assert ledger.started == [run.run_id]
    assert sorted(o.recipient for batch in ledger.batches for o in batch) == \
        ["a@corp.example", "b@corp.example"]
    assert ledger.finished == []  # aggregate_run finishes it


def test_provider_dying_around_a_group_still_answers_every_copy_once():
    members = ["m%d@corp.example" % i for i in range(5)]
    boxes = {a: mailbox() for a in members}
    boxes.update({"a%d@corp.example" % i: mailbox() for i in range(50)})
    ms = MemoryProvider("microsoft", boxes, groups={"g@corp.example": members}, batch=1,
                        workers=1)
    ms.unavailable_after = 1  # answers the group, then the app is refused
    recipients = ["g@corp.example"] + ["a%d@corp.example" % i for i in range(50)]
    run = engine_with({"microsoft": ms}).run(request_for(recipients))
    got = by_recipient(run)  # asserts one outcome per address
    assert set(got) == set(recipients) | set(members)
    assert got["g@corp.example"].reason == "not_a_mailbox"
    for address in members:
        assert got[address].via_group == "g@corp.example"
        assert got[address].status == "retracted" or \
            (got[address].reason, got[address].attempts) == ("not_authorized", 0)
    refused = [o for o in got.values() if o.reason == "not_authorized"]
    assert len(refused) >= 50 and all(o.error_code == "invalid_client" for o in refused)
    assert run.counts.total == len(got)
