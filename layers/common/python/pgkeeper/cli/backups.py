"""`pgkeeper backups list`: the complete backups in the bucket, and what retention would keep.

Only backups with a manifest are listed; dumps without one (a run that died) are not backups.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

from ..backup.restore import dbname
from ..backup.retention import decide
from ..backup.store import BackupStore, s3_client
from ..errors import ConfigError
from ..plan import PLAN_ENV, Plan, load_plan
from ..plan.backup import BackupPlan


@dataclass
class Location:
    store: BackupStore
    backup_plan: BackupPlan


def add_location_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", default=os.environ.get(PLAN_ENV), help=f"plan file (default ${PLAN_ENV})")
    p.add_argument("--bucket", help="bucket (default: the plan's backup.bucket or its env var)")
    p.add_argument("--prefix", help="key prefix (default: the plan's backup.prefix)")
    p.add_argument("--database", help="database name the backups were taken of (default: from the plan's URL)")


def locate(args: argparse.Namespace) -> Location:
    """Where the backups are, from flags, else from the plan (which needs no database connection)."""
    plan: Plan | None = load_plan(args.plan) if args.plan else None
    bp = plan.backup if plan is not None else BackupPlan()
    bucket = args.bucket or bp.resolve_bucket()
    prefix = BackupPlan(prefix=args.prefix).prefix if args.prefix is not None else bp.prefix
    database = args.database
    if not database:
        if plan is None:
            raise ConfigError(f"name the database (--database NAME) or a plan (--plan / ${PLAN_ENV})")
        from ..db.dsn import resolve_url, session_conninfo

        database = dbname(session_conninfo(resolve_url(plan.database)))
    return Location(BackupStore(s3_client(), bucket, prefix, database), bp)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backups", help="list backups in S3")
    bsub = p.add_subparsers(dest="backups_command", required=True, metavar="SUBCOMMAND")
    ls = bsub.add_parser("list", help="complete backups, newest first, with what retention keeps")
    add_location_args(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--details", action="store_true", help="read each manifest (tables, rows, versions)")
    ls.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    loc = locate(args)
    backups, orphans = loc.store.scan()
    decision = decide(backups, loc.backup_plan.retention)
    rows = []
    for b in backups:
        row = {
            "key": b.key,
            "taken_at": b.taken_at.isoformat().replace("+00:00", "Z"),
            "size_mb": round(b.size / 1e6, 2),
            "label": b.label or "",
            "retention": ", ".join(decision.reasons.get(b.key, [])) or "would delete",
        }
        if args.details:
            m = loc.store.read_manifest(b)
            row.update(tables=len(m.tables), rows=m.rows, pg_dump=m.pg_dump_version, server=m.server_version,
                       sha256=m.sha256, verified=m.verification.mode if m.verification else None,
                       recipients=", ".join(r[:16] + "…" for r in m.encryption.recipients) if m.encryption else "")
        rows.append(row)
    if args.json:
        print(json.dumps({"bucket": loc.store.bucket, "prefix": loc.store.base, "backups": rows,
                          "incomplete": [o.key for o in orphans]}, indent=2))
        return 0
    print(f"s3://{loc.store.bucket}/{loc.store.base}: {len(backups)} backup(s)", file=sys.stderr)
    cols = ["taken_at", "size_mb", "label", "retention", "key"]
    if args.details:
        cols[3:3] = ["tables", "rows", "pg_dump", "recipients"]
    _table(rows, cols)
    if orphans:
        print(f"{len(orphans)} incomplete dump(s) without a manifest (not backups; swept by retention after 24 h)",
              file=sys.stderr)
    return 0


def _table(rows: list[dict], columns: list[str]) -> None:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
