"""Vacuum and health: problems found before they hurt, maintenance only where it is needed.

A week of app traffic is simulated (messages edited, old group messages deleted, a migration whose
CREATE UNIQUE INDEX CONCURRENTLY failed on duplicate e-mails, a session left idle in a transaction);
`pgkeeper health` shows what that did; the scheduled vacuum run (events/vacuum-scheduled.json)
vacuums just the dirty tables while a migration holds one of them locked; the hourly hot-table
ANALYZE (events/vacuum-analyze.json) follows; the next weekly run starts with the table left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from demo.__main__ import ROOT, Demo, job_report, table


def run(demo: Demo) -> None:
    with demo.connect() as c:
        c.execute("""UPDATE "Message" SET content = content || ' (edited)' WHERE id <= 'msg_01600'""")
        c.execute("""DELETE FROM "GroupMessage" WHERE "createdAt" < timestamp '2025-03-15'""")
        c.execute("UPDATE users SET name = name || '!' WHERE id LIKE 'usr_1%'")
        c.execute("INSERT INTO users (id, email) VALUES ('usr_dup', 'user1@EXAMPLE.com')")
        c.execute("SELECT pg_stat_force_next_flush()")
        try:
            c.execute("CREATE UNIQUE INDEX CONCURRENTLY users_email_lower_key ON users (lower(email))")
        except psycopg.errors.UniqueViolation as exc:
            print(f"A migration's CREATE UNIQUE INDEX CONCURRENTLY failed: {exc.diag.message_primary}")
            print("  (it leaves an INVALID index behind, which still slows every write to users)")
    print("A week of traffic: 1,600 messages edited, old group messages deleted, 100 users renamed.")
    idle = psycopg.connect(demo.url)
    idle.execute("SELECT 1")  # a worker that began a transaction and went to lunch
    try:
        health(demo, "\n$ pgkeeper health      (read-only; same JSON as GET /health?detail=1 and mode: health)")
    finally:
        idle.close()

    migration = psycopg.connect(demo.url)
    try:
        migration.execute('LOCK TABLE "GroupMessage" IN ACCESS EXCLUSIVE MODE')  # a long ALTER TABLE, say
        result = demo.invoke("VacuumFunction", "vacuum-scheduled.json")
    finally:
        migration.close()
    show(result, "Weekly vacuum while a migration holds \"GroupMessage\" locked: it is skipped, never waited for")

    with demo.connect() as c:
        c.execute("UPDATE user_subscriptions SET status = 'active' WHERE status = 'past_due'")
        c.execute("SELECT pg_stat_force_next_flush()")
    result = demo.invoke("VacuumFunction", "vacuum-analyze.json")
    show(result, "Hourly hot-table ANALYZE (plan: vacuum.analyze): only the hot tables that changed")

    result = demo.invoke("VacuumFunction", "vacuum-scheduled.json")
    show(result, "Next weekly run: it starts with the table left behind (pgkeeper.vacuum_backlog)")

    rows = demo.sql("SELECT relname, n_live_tup, n_dead_tup, last_vacuum IS NOT NULL, last_analyze IS NOT NULL "
                    "FROM pg_stat_user_tables WHERE schemaname = 'public' ORDER BY n_dead_tup DESC, relname LIMIT 6")
    table([dict(zip(["table", "live", "dead", "vacuumed", "analyzed"], r, strict=True)) for r in rows],
          ["table", "live", "dead", "vacuumed", "analyzed"], "pg_stat_user_tables afterwards")


def health(demo: Demo, title: str) -> None:
    print(title)
    env = {**os.environ, **demo.env}
    proc = subprocess.run([sys.executable, "-m", "pgkeeper.cli", "health"], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-2000:])
        raise SystemExit(f"demo: pgkeeper health failed (exit {proc.returncode})")
    print(proc.stdout.rstrip())


def show(result: dict, title: str) -> None:
    report = job_report(result, title)
    if report is None:
        return
    rows = []
    for t in report["tables"]:
        why = t.get("why") or "; ".join(t["reasons"])
        rows.append({"table": t["table"], "action": t["action"], "outcome": t["outcome"],
                     "dead before": t.get("dead_tuples_before", ""), "after": t.get("dead_tuples_after", ""),
                     "s": t.get("duration_s", ""), "why": why[:80] + ("..." if len(why) > 80 else "")})
    table(rows, ["table", "action", "outcome", "dead before", "after", "s", "why"],
          f"{title}\n  status: {result.get('status')}; {report['selected']} of {report['considered']} tables "
          "needed something")
