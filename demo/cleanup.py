"""Cleanup: expired sessions and tokens deleted in short transactions, with before/after counts.

The example plan's `cleanup:` targets: sessions, password-reset and email-verification tokens
(batched by pgkeeper, used tokens included) and refresh tokens (the app's own DB-side function).
First a dry run (counts only), then the scheduled run, then the tables again.
"""

from __future__ import annotations

from psycopg import sql

from demo.__main__ import Demo, table

# What each target deletes, as the plan says it (for the before/after counts only).
TABLES = [
    ("sessions", "expires_at < now()"),
    ("password_reset_tokens", "expires_at < now() OR used_at IS NOT NULL"),
    ("email_verification_tokens", "expires_at < now() - interval '1 hour' OR used_at IS NOT NULL"),
    ("refresh_tokens", "expires_at < now()"),
]


def _counts(demo: Demo, title: str) -> None:
    rows = []
    for name, condition in TABLES:
        query = sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM {}").format(
            sql.SQL(condition), sql.Identifier(name))
        total, matching = demo.sql(query)[0]
        rows.append({"table": name, "rows": total, "to delete": matching, "kept": total - matching,
                     "condition": condition})
    table(rows, ["table", "rows", "to delete", "kept", "condition"], title)


def run(demo: Demo) -> None:
    _counts(demo, "Before: expired (and used) rows waiting for the cleanup")

    dry = demo.invoke("CleanupFunction", "cleanup-dry-run.json")
    print(f"  dry run: {dry.get('status')}, would delete {dry['report'].get('would_delete')} rows, deleted none")
    table([{"target": t["target"], "would delete": t.get("would_delete"), "outcome": t.get("outcome"),
            "rail": "would refuse" if t.get("safety_rail") else "ok"} for t in dry["report"]["targets"]],
          ["target", "would delete", "outcome", "rail"], "Dry run (a rolled-back call for the function target)")

    result = demo.invoke("CleanupFunction", "cleanup-scheduled.json")
    report = result["report"]
    print(f"  run: {result.get('status')}, {report.get('rows_deleted')} rows deleted")
    table([{"target": t["target"], "how": t.get("method", "function"), "outcome": t.get("outcome"),
            "deleted": t.get("rows_deleted"), "txns": t.get("transactions"),
            "longest txn ms": t.get("longest_transaction_ms"), "ms": t.get("duration_ms", ""),
            "remaining": t.get("remaining", ""), "analyze": t.get("analyze", "")}
           for t in report["targets"]],
          ["target", "how", "outcome", "deleted", "txns", "longest txn ms", "ms", "remaining", "analyze"],
          "Scheduled run (events/cleanup-scheduled.json)")

    _counts(demo, "After: only live, unused rows are left")
