"""Refresh: the seeds' drifted dashboard view repaired, then every view refreshed, via `pgkeeper invoke`.

demo/schema.sql ends with the migration that added "Companion".description after the views
existed, so the app's dashboard query fails with the seeds' `column "description" does not exist`.
The example plan's definition file for the view already selects the column: the scheduled refresh
notices the stored view differs from it and recreates it (and mv_category_stats, built on it).
"""

from __future__ import annotations

import psycopg

from demo.__main__ import Demo, job_report, table

DASHBOARD_QUERY = 'SELECT id, name, description, message_count FROM "mv_dashboard_companions" ORDER BY id LIMIT 3'


def run(demo: Demo) -> None:
    print("The app's dashboard query, after `prisma migrate deploy` added \"Companion\".description:")
    print(f"  {DASHBOARD_QUERY}")
    try:
        demo.sql(DASHBOARD_QUERY)
        print("  (it worked: the view was already up to date)")
    except psycopg.errors.UndefinedColumn as exc:
        print(f"  ERROR: {exc.diag.message_primary}   <- the seeds' error")

    result = demo.invoke("RefreshFunction", "refresh-scheduled.json")
    show(result, "Scheduled refresh: the drifted view is repaired (with the view built on it), the rest refreshed")

    print("\nThe same query now:")
    table([dict(zip(["id", "name", "description", "message_count"], r, strict=True))
           for r in demo.sql(DASHBOARD_QUERY)], ["id", "name", "description", "message_count"])

    with demo.connect() as c:
        c.execute("""INSERT INTO "Message" (id, role, content, "companionId", "userId", "createdAt")
                     SELECT 'msg_demo_' || g, 'user', 'hello again', 'cmp_0001', 'user_1', now()
                     FROM generate_series(1, 25) g""")
    before = demo.sql("""SELECT message_count FROM "mv_dashboard_companions" WHERE id = 'cmp_0001'""")[0][0]
    result = demo.invoke("RefreshFunction", "refresh-scheduled.json")
    after = demo.sql("""SELECT message_count FROM "mv_dashboard_companions" WHERE id = 'cmp_0001'""")[0][0]
    show(result, "25 new messages, next scheduled run: nothing drifted; keyed views CONCURRENTLY (readers never wait)")
    print(f"  cmp_0001 message_count: {before} -> {after}")

    result = demo.invoke("RefreshFunction", "refresh-invoke-repair.json")
    show(result, 'After a risky deploy: {"repair": true} recreates every view from its definition file')

    runs = demo.sql("SELECT trigger, status, report->>'repaired', report->>'refreshed' FROM pgkeeper.runs "
                    "WHERE job = 'refresh' ORDER BY started_at")
    table([dict(zip(["trigger", "status", "repaired", "refreshed"], r, strict=True)) for r in runs],
          ["trigger", "status", "repaired", "refreshed"], "Run history (pgkeeper.runs)")


def show(result: dict, title: str) -> None:
    """The per-view report as a table; a failed invocation prints Lambda's error shape instead."""
    report = job_report(result, title)
    if report is None:
        return
    rows = []
    for v in report["views"]:
        note = v.get("error") or v.get("repaired_because") or "; ".join(v.get("warnings") or []) or ""
        rows.append({"view": v["name"], "mode": v["mode"], "outcome": v["outcome"], "rows": v["rows"],
                     "ms": v["duration_ms"] if v["duration_ms"] is not None else "",
                     "why / notes": note[:90] + ("..." if len(note) > 90 else "")})
    table(rows, ["view", "mode", "outcome", "rows", "ms", "why / notes"],
          f"{title}\n  status: {result.get('status')}")
