"""How fast the ledger answers the card and "view details" over a month of outcomes.

Fills a fresh ledger with N outcome rows over 30 days (default 1,000,000; a bulk insert of
rows built by the ledger's own row builder, with the counted flags, copies and episodes the
write path would have left: ~4% of rows are reruns that do not count), then times, on SQLite
and, when a URL is given, on PostgreSQL (in a schema of its own, dropped afterwards):

- the metric record for the last 24 h and the last 30 d (and 30 d filtered by provider);
- one details page (limit 50), the next page by cursor, and a filtered page (rare reason);
- the skip-list lookup for 500 recipients;
- the write path itself: record_outcomes of 5,000 new outcomes in batches of 500.

Each read is timed three times on a warm ledger; the best and the first are reported.

    .venv/bin/python bench/ledger.py [--rows 1000000] [--postgres-url URL]
    (or EMAIL_RETRACTION_TEST_POSTGRES_URL=postgresql+psycopg://root@127.0.0.1:5432/test)

Targets: record <= 1 s, details page <= 0.2 s. Prints one JSON object as its last line.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACK_ROOT, "lib"))

from retraction.ledger import Ledger  # noqa: E402
from retraction.ledger.rows import outcome_row  # noqa: E402
from retraction.ledger.schema import copies, episodes, outcomes  # noqa: E402
from retraction.metrics import parse_window  # noqa: E402
from retraction.model import Outcome, Reason  # noqa: E402

END = datetime(2026, 3, 31, tzinfo=timezone.utc)
DAYS = 30
FIELDS = [c.name for c in outcomes.columns if c.name != "id"]
TARGETS = {"record_s": 1.0, "details_page_s": 0.2}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def generate(rows, seed=7):
    """Yield (outcome row, copy row, episode row or None) batches: runs of 1-500 recipients;
    80% retracted, 6% already there, 11% failed, 3% previews; 4% of runs are reruns."""
    rng = random.Random(seed)
    made, runs_done = 0, []
    reasons = [r.value for r in Reason]
    while made < rows:
        rerun = bool(runs_done) and rng.random() < 0.04
        if rerun:  # the same request again, later: every copy is already there
            run = dict(rng.choice(runs_done))
            run["base"] += timedelta(minutes=rng.randint(5, 600))
        else:
            count = min(rng.choice((1, 3, 20, 120, 500)), rows - made)
            mode, trigger = rng.choice((("auto", "disposition"), ("auto", "post_delivery"),
                                        ("auto", "phish_submission"), ("manual", "analyst")))
            run = {
                "message": "<{}@evil.example>".format(uuid.uuid4().hex),
                "recipients": ["user{:06d}@corp{}.example".format(number, number % 7)
                               for number in rng.sample(range(10 ** 6), count)],
                "base": END - timedelta(seconds=rng.random() * DAYS * 86400),
                "provider": rng.choice(("microsoft", "microsoft", "google")),
                "mode": mode, "trigger": trigger,
                "destination": rng.choice(("junk", "trash", "trash", "soft_delete")),
            }
        preview = not rerun and rng.random() < 0.03
        if not rerun and not preview:
            runs_done.append(run)
        message, base = run["message"], run["base"]
        recipients = run["recipients"][:rows - made]
        provider, mode, trigger = run["provider"], run["mode"], run["trigger"]
        destination = run["destination"]
        run_id = uuid.uuid4().hex
        batch = []
        for index, recipient in enumerate(recipients):
            roll = rng.random()
            if preview:
                status = "previewed" if roll < 0.9 else "failed"
            elif rerun:
                status = "already_in_destination"
            else:
                status = "retracted" if roll < 0.83 else (
                    "already_in_destination" if roll < 0.89 else "failed")
            done = base + timedelta(seconds=5 + index * 0.05 + rng.expovariate(1 / 40.0))
            if done >= END:
                done = END - timedelta(seconds=rng.random())
            outcome = Outcome(
                run_id=run_id, message_id=message, recipient=recipient, provider=provider,
                destination=destination, mode=mode, trigger=trigger, status=status,
                reason=rng.choice(reasons) if status == "failed" else None,
                disposition="MALICIOUS" if mode == "auto" else None,
                was_read=rng.random() < 0.3 if status in ("retracted", "previewed") else None,
                source_folder="inbox", verdict_time=base if mode == "auto" else None,
                requested_at=base, completed_at=done)
            row = outcome_row(outcome, preview)
            row.update(counted=not rerun, episode=1)
            key = {"message_id": message, "recipient_key": row["recipient_key"]}
            placed = status in ("retracted", "already_in_destination")
            copy = dict(key, location=destination if placed else None,
                        moves=1 if status == "retracted" else 0)
            episode = None if rerun else dict(
                key, destination=destination, episode=0 if preview else 1,
                run_id=None if preview else run_id,
                rank={"retracted": 3, "already_in_destination": 2}.get(status, 1),
                placed=placed and not preview, preview_episode=1 if preview else 0,
                preview_run_id=run_id if preview else None,
                preview_rank=2 if status == "previewed" else (1 if preview else 0),
                preview_moves=0 if preview else None)
            batch.append((row, None if rerun else copy, episode))
        made += len(batch)
        yield batch


def fill(ledger, rows):
    started = time.perf_counter()
    postgres = ledger.engine.dialect.name == "postgresql"
    pending, done = [], 0
    for batch in generate(rows):
        pending += batch
        if len(pending) >= 50000:
            done += _flush(ledger, pending, postgres)
            pending = []
            log("  filled {:,} rows".format(done))
    done += _flush(ledger, pending, postgres)
    with ledger.engine.connect() as conn:
        if postgres:  # autovacuum would do this after a bulk load; index-only scans need it
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE")
    return done, time.perf_counter() - started


def _flush(ledger, pending, postgres):
    outcome_rows = [row for row, _, _ in pending]
    copy_rows = [copy for _, copy, _ in pending if copy is not None]
    episode_rows = [ep for _, _, ep in pending if ep is not None]
    with ledger.engine.begin() as conn:
        if postgres:
            cursor = conn.connection.driver_connection.cursor()
            for table, columns, data in ((outcomes, FIELDS, outcome_rows),
                                         (copies, [c.name for c in copies.columns], copy_rows),
                                         (episodes, [c.name for c in episodes.columns],
                                          episode_rows)):
                with cursor.copy("COPY {} ({}) FROM STDIN".format(
                        table.name, ", ".join(columns))) as copy:
                    for item in data:
                        copy.write_row([item[c] for c in columns])
        else:
            conn.execute(outcomes.insert(), outcome_rows)
            conn.execute(copies.insert(), copy_rows)
            conn.execute(episodes.insert(), episode_rows)
    return len(outcome_rows)


def timed(call, repeat=3):
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return {"first_s": round(times[0], 4), "best_s": round(min(times), 4)}, result


def measure(url, rows):
    with Ledger(url) as ledger:
        filled, fill_s = fill(ledger, rows)
        log("  filled {:,} rows in {:.1f} s".format(filled, fill_s))
    figures = {"rows": filled, "fill_s": round(fill_s, 1)}
    with Ledger(url) as ledger:  # a fresh process would open it like this
        day = parse_window(last="24h", now=END)
        month = parse_window(last="30d", now=END)
        figures["record_24h"], record = timed(lambda: ledger.metric_record(day))
        figures["record_24h"]["total"] = record.total
        figures["record_30d"], record = timed(lambda: ledger.metric_record(month))
        figures["record_30d"].update(total=record.total, retracted=record.retracted,
                                     p50_s=record.time_to_retract.p50_s,
                                     p95_s=record.time_to_retract.p95_s)
        figures["record_30d_google"], _ = timed(
            lambda: ledger.metric_record(month, {"provider": "google"}))
        figures["details_page"], (page, cursor) = timed(lambda: ledger.details(month, limit=50))
        figures["details_next_page"], _ = timed(
            lambda: ledger.details(month, limit=50, cursor=cursor))
        figures["details_failed_not_authorized_page"], _ = timed(
            lambda: ledger.details(month, status="failed", reason="not_authorized",
                                   filters={"provider": "google"}, limit=50))
        sample = page[0]
        with ledger.engine.connect() as conn:
            names = conn.execute(outcomes.select().with_only_columns(outcomes.c.recipient)
                                 .where(outcomes.c.message_id == sample["message_id"])
                                 ).scalars().all()
        names = (names + ["nobody{}@corp.example".format(i) for i in range(500)])[:500]
        figures["retracted_recipients_500"], _ = timed(
            lambda: ledger.retracted_recipients(sample["message_id"], sample["destination"],
                                                names))
        new = [Outcome(run_id="bench-write", message_id="<bench-write@evil.example>",
                       recipient="w{:05d}@corp.example".format(i), provider="microsoft",
                       destination="junk", mode="auto", trigger="disposition",
                       status="retracted", requested_at=END, completed_at=END)
               for i in range(5000)]
        started = time.perf_counter()
        ledger.record_outcomes(new, batch_size=500)
        figures["write_outcomes_per_s"] = round(5000 / (time.perf_counter() - started))
    return figures


def sqlite_run(rows, directory):
    path = os.path.join(directory, "bench-ledger.db")
    figures = measure("sqlite:///" + path, rows)
    figures["db_mb"] = round(sum(os.path.getsize(path + suffix) for suffix in ("", "-wal")
                                 if os.path.exists(path + suffix)) / 2 ** 20)
    return figures


def postgres_run(rows, base_url):
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    schema = "ledger_bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql('CREATE SCHEMA "{}"'.format(schema))
    try:
        url = base.update_query_dict({"options": "-csearch_path={}".format(schema)})
        figures = measure(url.render_as_string(hide_password=False), rows)
        with admin.connect() as conn:
            figures["db_mb"] = round(conn.exec_driver_sql(
                "SELECT sum(pg_total_relation_size(quote_ident(schemaname) || '.' || "
                "quote_ident(tablename))) FROM pg_tables WHERE schemaname = %s",
                (schema,)).scalar() / 2 ** 20)
        return figures
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql('DROP SCHEMA "{}" CASCADE'.format(schema))
        admin.dispose()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1000000)
    parser.add_argument("--postgres-url", default=os.environ.get(
        "EMAIL_RETRACTION_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    if args.rows < 1:
        parser.error("--rows must be positive")
    result = {"rows": args.rows, "days": DAYS, "targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as directory:
        log("sqlite: filling {:,} rows".format(args.rows))
        result["sqlite"] = sqlite_run(args.rows, directory)
    if args.postgres_url:
        log("postgresql: filling {:,} rows".format(args.rows))
        result["postgresql"] = postgres_run(args.rows, args.postgres_url)
    else:
        result["postgresql"] = {"skipped": "give --postgres-url or set "
                                           "EMAIL_RETRACTION_TEST_POSTGRES_URL"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
