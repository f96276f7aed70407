"""`retract_campaign` run by StackStorm: its workflow engine walks
actions/workflows/retract_campaign.yaml (Orquesta, with-items over the chunks), the python runner
runs split_recipients, retract (one execution per chunk) and aggregate_run in its wrapper
subprocesses against the sandbox tenant, and the run is read back from the ledger.

What is checked against the sandbox's truth (its control API: where each copy is, the audit of
every move) and the ledger (lib/retraction/ledger):
- every chunk succeeds: one run, one outcome per copy, the metric record of the whole run;
- preview: nothing moves, the outcomes say what would have;
- a chunk fails (Entra ID's token endpoint down, so no Microsoft copy can be attempted): the
  next chunk is never scheduled, the run is aggregated anyway with the other chunks' outcomes,
  and the workflow ends failed; the operator then reruns the chunk (`st2 execution re-run` of
  its execution, `st2 run email_retraction.retract run_id=...` for the one that never ran) and
  `aggregate_run`, or reruns the workflow from its `retract` task;
- a chunk of copies the pack's policy refuses is not a failed chunk; a chunk whose provider
  refused the credentials is;
- a request refused by split_recipients contacts nobody and records nothing.
"""
import pytest

from retraction.ledger import Ledger

pytest_plugins = ["st2_stack"]

MID = "<abc@evil.example>"
CAMPAIGN = "email_retraction.retract_campaign"
RETRACT = "email_retraction.retract"


@pytest.fixture(scope="module")
def st2_base_config(st2_sandbox, tmp_path_factory):
    """The sandbox's config, a SQLite ledger of this module, and a short retry budget (a
    provider that is down fails its copies in seconds)."""
    ledger = tmp_path_factory.mktemp("ledger").joinpath("ledger.db")
    config = st2_sandbox.pack_config(ledger_url="sqlite:///%s" % ledger)
    config["limits"].update(max_attempts=2, retry_budget_s=2)
    return config


# -- reading what happened ---------------------------------------------------------------------

def task_key(execution):
    """`task` or `task[item]` (with-items) of a workflow's child execution."""
    orquesta = execution.context.get("orquesta") or {}
    if orquesta.get("item_id") is None:
        return orquesta.get("task_name")
    return "%s[%d]" % (orquesta["task_name"], orquesta["item_id"])


def tasks(st2, execution_id):
    """{task (with [item] for with-items): status} of the workflow's child executions."""
    found = {}
    for execution in st2.children(execution_id):
        assert task_key(execution) not in found, task_key(execution)
        found[task_key(execution)] = execution.status
    return found


def child(st2, execution_id, key):
    (found,) = [c for c in st2.children(execution_id) if task_key(c) == key]
    return found


def folders(box, message_id=MID):
    return {c["mailbox"]: c["folder"] for c in box.copies(message_id)}


def moves(box, since):
    """The mailboxes whose copy of MID was changed since audit seq `since`, one per change."""
    return sorted(e["mailbox"] for e in box.audit(since) if e["message_id"] == MID)


def ledger(config):
    return Ledger(config["ledger_url"])


def outcomes(config, run_id):
    """{recipient: (status, reason)}, asserting one outcome per copy."""
    with ledger(config) as book:
        rows = book.outcomes_for_run(run_id)
    got = {o.recipient: (o.status, o.reason) for o in rows}
    assert len(got) == len(rows), [o.recipient for o in rows]
    return got


def figures(record, *names):
    return tuple(record[n] for n in names)


# -- every chunk succeeds ----------------------------------------------------------------------

def test_every_chunk_succeeds_and_the_chunks_are_one_run(st2, st2_tenant, st2_config):
    box = st2_tenant
    seq = box.audit_seq()
    recipients = ["alice@corp.example", "bob@corp.example", "carol@corp-mail.example",
                  "dave@corp-mail.example", "exec@corp.example"]
    execution = st2.run(CAMPAIGN, {"message_id": MID, "recipients": recipients,
                                   "destination": "trash", "chunk_size": 2, "concurrency": 2,
                                   "comment": "INC-3"})
    wf = str(execution.id)
    assert execution.status == "succeeded", execution.result
    assert tasks(st2, wf) == {"split": "succeeded", "retract[0]": "succeeded",
                              "retract[1]": "succeeded", "retract[2]": "succeeded",
                              "aggregate": "succeeded", "conclude": "succeeded"}
    output = execution.result["output"]
    run_id = output["run_id"]
    chunks = st2.result(child(st2, wf, "split"))["chunks"]
    assert chunks == [recipients[0:2], recipients[2:4], recipients[4:]]
    for index, chunk in enumerate(chunks):
        params = child(st2, wf, "retract[%d]" % index).parameters
        assert (params["run_id"], params["recipients"], params["message_id"],
                params["destination"], params["mode"], params["comment"]) == \
            (run_id, chunk, MID, "trash", "manual", "INC-3")
    assert output["state"] == "finished"
    record = output["metric_record"]
    assert figures(record, "total", "retracted", "already_in_destination", "failed",
                   "manual", "auto", "read", "unread") == (5, 3, 1, 1, 5, 0, 1, 2)
    assert record["failed_by_reason"]["not_authorized"] == 1
    assert output["card"].splitlines()[:2] == ["Retraction run %s · one run" % run_id,
                                               "Total retractions: 5"]
    # the ledger: one run, one outcome per copy, the record aggregate_run stored
    with ledger(st2_config) as book:
        run = book.run(run_id)
        assert {o.comment for o in book.outcomes_for_run(run_id)} == {"INC-3"}
    assert run["state"] == "finished" and run["metric_record"] == record
    assert outcomes(st2_config, run_id) == {
        "alice@corp.example": ("retracted", None),
        "bob@corp.example": ("already_in_destination", None),
        "carol@corp-mail.example": ("retracted", None),
        "dave@corp-mail.example": ("retracted", None),
        "exec@corp.example": ("failed", "not_authorized")}
    # the tenant: three copies moved, once each; exec's application access policy held
    assert folders(box) == {"alice@corp.example": "trash", "bob@corp.example": "trash",
                            "shared-ops@corp.example": "inbox", "exec@corp.example": "inbox",
                            "carol@corp-mail.example": "trash", "dave@corp-mail.example": "trash"}
    assert moves(box, seq) == ["alice@corp.example", "carol@corp-mail.example",
                               "dave@corp-mail.example"]


def test_preview_moves_nothing_and_says_what_would_move(st2, st2_tenant, st2_config):
    box = st2_tenant
    before, seq = folders(box), box.audit_seq()
    execution = st2.run(CAMPAIGN, {
        "message_id": MID, "preview": True, "destination": "trash", "chunk_size": 3,
        "recipients": ["alice@corp.example", "bob@corp.example", "carol@corp-mail.example",
                       "dave@corp-mail.example", "exec@corp.example"]})
    assert execution.status == "succeeded", execution.result
    output = execution.result["output"]
    assert output["state"] == "finished"
    # a preview is a track of its own: every copy found counts as previewed, none as retracted
    assert figures(output["metric_record"], "total", "retracted", "previewed",
                   "preview_failed") == (0, 0, 4, 1)
    with ledger(st2_config) as book:
        assert book.run(output["run_id"])["preview"] is True
    assert outcomes(st2_config, output["run_id"]) == {
        "alice@corp.example": ("previewed", None),
        "bob@corp.example": ("already_in_destination", None),
        "carol@corp-mail.example": ("previewed", None),
        "dave@corp-mail.example": ("previewed", None),
        "exec@corp.example": ("failed", "not_authorized")}
    assert folders(box) == before
    assert box.audit(seq) == []


# -- a chunk fails ---------------------------------------------------------------------------

FAILING = ["carol@corp-mail.example", "dave@corp-mail.example",  # chunk 0: Gmail
           "alice@corp.example", "bob@corp.example",  # chunk 1: Microsoft, token endpoint down
           "gone@corp-mail.example", "x@elsewhere.example"]  # chunk 2: never scheduled


def _campaign_with_a_failing_chunk(st2, box):
    """retract_campaign over FAILING in chunks of 2, one at a time, while Entra ID answers
    every token request with 503: chunk 1 fails and Orquesta schedules no further item."""
    box.faults({"login": {"token_outage": True}})
    try:
        execution = st2.run(CAMPAIGN, {"message_id": MID, "recipients": FAILING,
                                       "destination": "trash", "chunk_size": 2,
                                       "concurrency": 1})
    finally:
        box.faults({}, clear=True)
    return execution


def _assert_failed_but_aggregated(st2, config, box, execution):
    wf = str(execution.id)
    assert execution.status == "failed"
    assert tasks(st2, wf) == {"split": "succeeded", "retract[0]": "succeeded",
                              "retract[1]": "failed", "aggregate": "succeeded",
                              "conclude": "succeeded"}
    failed = st2.result(child(st2, wf, "retract[1]"))
    assert failed["ok"] is False and failed["counts"]["attempted"] == 0
    assert failed["error"].startswith("no copy could be attempted: 2 failed (2 provider_error)")
    aggregated = st2.result(child(st2, wf, "aggregate"))
    assert (aggregated["state"], aggregated["failed_chunks"]) == ("failed", 2)
    output = execution.result["output"]
    run_id = output["run_id"]
    assert output["state"] == "failed"
    assert figures(output["metric_record"], "total", "retracted", "failed") == (4, 2, 2)
    assert output["metric_record"]["failed_by_reason"]["provider_error"] == 2
    with ledger(config) as book:
        run = book.run(run_id)
    assert run["state"] == "failed" and run["metric_record"] == output["metric_record"]
    # chunk 0's outcomes are kept; chunk 2 has none
    assert outcomes(config, run_id) == {
        "carol@corp-mail.example": ("retracted", None),
        "dave@corp-mail.example": ("retracted", None),
        "alice@corp.example": ("failed", "provider_error"),
        "bob@corp.example": ("failed", "provider_error")}
    assert (folders(box)["carol@corp-mail.example"], folders(box)["alice@corp.example"]) == \
        ("trash", "inbox")
    return run_id


FINISHED = {"carol@corp-mail.example": ("retracted", None),
            "dave@corp-mail.example": ("retracted", None),
            "alice@corp.example": ("retracted", None),
            "bob@corp.example": ("already_in_destination", None),
            "gone@corp-mail.example": ("failed", "not_a_mailbox"),
            "x@elsewhere.example": ("failed", "out_of_scope")}


def test_a_failing_chunk_then_the_operator_reruns_it_by_run_id(st2, st2_tenant, st2_config):
    box = st2_tenant
    seq = box.audit_seq()
    execution = _campaign_with_a_failing_chunk(st2, box)
    run_id = _assert_failed_but_aggregated(st2, st2_config, box, execution)
    wf = str(execution.id)
    failed_chunk = child(st2, wf, "retract[1]")

    # `st2 execution re-run <chunk>`: the same parameters, run id included
    rerun = st2.wait(st2.rerun(failed_chunk.id))
    assert rerun.status == "succeeded", rerun.result
    assert rerun.parameters == failed_chunk.parameters
    assert rerun.context["re-run"]["ref"] == str(failed_chunk.id)
    assert st2.result(rerun)["chunk"] is True
    # the chunk that never ran: `st2 run email_retraction.retract run_id=<run> ...`
    never_ran = dict(failed_chunk.parameters,
                     recipients=["gone@corp-mail.example", "x@elsewhere.example"])
    last = st2.run(RETRACT, never_ran)
    assert last.status == "succeeded", last.result
    aggregated = st2.run("email_retraction.aggregate_run", {"run_id": run_id})
    assert aggregated.status == "succeeded", aggregated.result
    result = st2.result(aggregated)
    assert result["state"] == "finished"
    record = result["metric_record"]
    assert figures(record, "total", "retracted", "already_in_destination", "failed") == \
        (6, 3, 1, 2)
    with ledger(st2_config) as book:
        run = book.run(run_id)
    assert run["state"] == "finished" and run["metric_record"] == record
    assert outcomes(st2_config, run_id) == FINISHED  # alice's provider_error replaced
    assert folders(box)["alice@corp.example"] == "trash"

    # Chunk 0 once more, and the aggregation: the run does not change, nothing moves twice.
    again = st2.wait(st2.rerun(child(st2, wf, "retract[0]").id))
    assert again.status == "succeeded"
    assert {o["recipient"]: o["status"] for o in st2.result(again)["outcomes"]} == {
        "carol@corp-mail.example": "already_in_destination",
        "dave@corp-mail.example": "already_in_destination"}
    reaggregated = st2.run("email_retraction.aggregate_run", {"run_id": run_id})
    assert st2.result(reaggregated)["metric_record"] == record
    assert outcomes(st2_config, run_id) == FINISHED
    assert moves(box, seq) == ["alice@corp.example", "carol@corp-mail.example",
                               "dave@corp-mail.example"]


def test_a_failing_chunk_then_the_workflow_is_rerun_from_retract(st2, st2_tenant, st2_config):
    """`st2 execution re-run <workflow> --tasks retract`: Orquesta reruns the failed and the
    unrun items of the with-items task under the run id in the workflow's context, then
    aggregate_run finishes the run.

    (StackStorm keeps the first execution's output on the rerun workflow:
    st2common.services.workflows.request_rerun saves the conductor's status and state but
    not its reset output, so the rerun's `output` still shows state failed; the run's truth
    is in aggregate_run's result and the ledger.)"""
    box = st2_tenant
    execution = _campaign_with_a_failing_chunk(st2, box)
    run_id = _assert_failed_but_aggregated(st2, st2_config, box, execution)
    rerun = st2.wait(st2.rerun(execution.id, tasks=["retract"]))
    assert rerun.status == "succeeded", rerun.result
    rerun_id = str(rerun.id)
    assert tasks(st2, rerun_id) == {"retract[1]": "succeeded", "retract[2]": "succeeded",
                                    "aggregate": "succeeded", "conclude": "succeeded"}
    for name in ("retract[1]", "retract[2]"):
        assert child(st2, rerun_id, name).parameters["run_id"] == run_id
    aggregated = st2.result(child(st2, rerun_id, "aggregate"))
    assert (aggregated["state"], aggregated["failed_chunks"]) == ("finished", 0)
    assert figures(aggregated["metric_record"], "total", "retracted", "already_in_destination",
                   "failed") == (6, 3, 1, 2)
    with ledger(st2_config) as book:
        assert book.run(run_id)["state"] == "finished"
    assert outcomes(st2_config, run_id) == FINISHED
    assert folders(box)["alice@corp.example"] == "trash"


# -- what counts as a failed chunk -------------------------------------------------------------

def test_a_chunk_refused_by_policy_is_not_a_failed_chunk(st2, st2_tenant, st2_config):
    """Copies the pack's policy refuses (a domain no provider serves, a protected mailbox)
    have definitive outcomes: a chunk of only those is ok and the run finishes."""
    execution = st2.run(CAMPAIGN, {
        "message_id": MID, "chunk_size": 2,
        "recipients": ["alice@corp.example", "bob@corp.example", "x@elsewhere.example",
                       "journal@corp.example"]})
    assert execution.status == "succeeded", execution.result
    wf = str(execution.id)
    assert tasks(st2, wf) == {"split": "succeeded", "retract[0]": "succeeded",
                              "retract[1]": "succeeded", "aggregate": "succeeded",
                              "conclude": "succeeded"}
    assert st2.result(child(st2, wf, "aggregate"))["failed_chunks"] == 0
    output = execution.result["output"]
    assert output["state"] == "finished"
    record = output["metric_record"]
    assert figures(record, "total", "retracted") == (4, 2)
    assert record["failed_by_reason"]["out_of_scope"] == 2
    assert outcomes(st2_config, output["run_id"]) == {
        "alice@corp.example": ("retracted", None), "bob@corp.example": ("retracted", None),
        "x@elsewhere.example": ("failed", "out_of_scope"),
        "journal@corp.example": ("failed", "out_of_scope")}
    assert folders(st2_tenant)["bob@corp.example"] == "junk"  # the default destination


def test_a_chunk_whose_provider_refused_the_credentials_fails_the_workflow(
        st2, st2_tenant, st2_config):
    st2_config["microsoft"]["client_secret"] = "wrong-secret"
    st2.reconfigure(st2_config)
    execution = st2.run(CAMPAIGN, {
        "message_id": MID, "chunk_size": 2,
        "recipients": ["alice@corp.example", "bob@corp.example", "carol@corp-mail.example",
                       "x@elsewhere.example"]})
    assert execution.status == "failed"
    wf = str(execution.id)
    assert tasks(st2, wf) == {"split": "succeeded", "retract[0]": "failed",
                              "retract[1]": "succeeded", "aggregate": "succeeded",
                              "conclude": "succeeded"}
    assert st2.result(child(st2, wf, "aggregate"))["failed_chunks"] == 1
    output = execution.result["output"]
    assert output["state"] == "failed"
    record = output["metric_record"]
    assert (record["total"], record["retracted"], record["failed_by_reason"]["not_authorized"],
            record["failed_by_reason"]["out_of_scope"]) == (4, 1, 2, 1)
    assert folders(st2_tenant)["alice@corp.example"] == "inbox"


def test_a_refused_request_stops_at_split_and_contacts_nobody(st2, st2_tenant, st2_config):
    box = st2_tenant
    with ledger(st2_config) as book:
        runs_before = book.runs()[0]
    execution = st2.run(CAMPAIGN, {"message_id": MID, "destination": "hard_delete",
                                   "recipients": ["alice@corp.example"]})
    assert execution.status == "failed"
    wf = str(execution.id)
    assert tasks(st2, wf) == {"split": "failed"}
    assert "hard_delete" in str(child(st2, wf, "split").result)
    assert execution.result["output"] == {"run_id": None, "state": None,
                                          "metric_record": None, "card": None}
    providers = [route for route in box.counters()["routes"]
                 if not route.startswith("control.")]
    assert providers == []
    with ledger(st2_config) as book:
        assert book.runs()[0] == runs_before
