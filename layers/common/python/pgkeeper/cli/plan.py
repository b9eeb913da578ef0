"""`pgkeeper plan check`: validate a plan file, then against a live database, before deploying it.

Exit codes: 0 the plan matches the database, 1 problems found (each named, with what the next run
would refuse), 2 unusable input (a bad plan or env-vars file, no database URL, no database).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import import_module

import psycopg

from ..db import Database
from ..db.dsn import pooler_hosts, resolve_url
from ..errors import first_line
from ..plan import PLAN_ENV, Plan, load_plan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="work with plan files")
    psub = p.add_subparsers(dest="plan_command", required=True, metavar="SUBCOMMAND")
    check = psub.add_parser("check", help="validate a plan file and check it against the database",
                            description="Exit 0: the plan matches the database; 1: problems found; "
                                        "2: unusable input (plan, env-vars file, database URL, database).")
    check.add_argument("--plan", default=None, help=f"plan file (default ${PLAN_ENV})")
    check.add_argument("--env-vars", metavar="FILE",
                       help='SAM\'s env-vars file, as `pgkeeper invoke` takes it ({"Parameters": {...}, '
                            '"<FunctionLogicalId>": {...}}): its variables, every function\'s, apply while checking')
    check.add_argument("--offline", action="store_true", help="validate the file only; no database")
    check.set_defaults(func=run_check)


def env_file_values(path: str | None) -> dict[str, str]:
    """The variables of an env-vars file: `Parameters` first, then every function's section."""
    from ..local.invoke import read_env_vars, stringify

    data = read_env_vars(path)
    values = {k: stringify(v) for k, v in data.get("Parameters", {}).items()}
    for section, variables in data.items():
        if section != "Parameters":
            values.update({k: stringify(v) for k, v in variables.items()})
    return values


def run_check(args: argparse.Namespace) -> int:
    from ..local.invoke import environment

    with environment(dict(env_file_values(args.env_vars))):
        path = args.plan or os.environ.get(PLAN_ENV)
        plan = load_plan(path)
        print(f"plan {path}: valid", file=sys.stderr)
        if args.offline:
            return 0
        try:
            return _check_database(plan, path)
        except psycopg.OperationalError as exc:  # the connection was lost while checking
            print(f"pgkeeper: database_unavailable: {first_line(exc)}", file=sys.stderr)
            return 2


def _check_database(plan: Plan, path: str | None) -> int:
    from .. import privileges
    from ..jobs import all_jobs

    problems, notes = _host_findings(plan)
    db = Database.from_settings(plan.database, "plan-check")
    try:
        conn = db.conn
        for name, spec in all_jobs().items():
            report = getattr(import_module(f"pgkeeper.{name}.job"), "check_report", None)
            try:
                if report is not None:
                    found, said = report(plan, conn)
                    problems += found
                    notes += said
                elif spec.check is not None:
                    problems += spec.check(plan, conn)
                if name == "refresh":
                    problems += privileges.refresh_problems(plan, conn)
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    raise
                problems.append(f"{name}: the check failed: {type(exc).__name__}: {first_line(exc)}")
    finally:
        db.close()
    result = {"database": db.where, "problems": problems, "notes": notes}
    print(json.dumps(result, indent=2))
    if problems:
        print(f"plan {path}: {len(problems)} problem(s) against {db.where}", file=sys.stderr)
        return 1
    print(f"plan {path}: matches {db.where}", file=sys.stderr)
    return 0


def _host_findings(plan: Plan) -> tuple[list[str], list[str]]:
    """A Neon `-pooler` host: swapped for the direct one (a note), or kept (a problem: PgBouncer in
    transaction mode drops advisory locks, session settings and pg_dump's snapshot between statements)."""
    settings = plan.database
    problems: list[str] = []
    notes: list[str] = []
    for pooler, direct in pooler_hosts(resolve_url(settings)):
        if settings.use_direct_host:
            notes.append(f"database: {pooler} is Neon's connection pooler; pgkeeper connects to the direct "
                         f"host {direct} (use_direct_host)")
        else:
            problems.append(f"database: {pooler} is Neon's connection pooler (PgBouncer, transaction mode) and "
                            f"use_direct_host is false: advisory locks, session settings and pg_dump's snapshot "
                            f"break behind it; use the direct host {direct} or set use_direct_host: true")
    return problems, notes
