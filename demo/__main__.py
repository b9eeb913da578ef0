"""Run the demo: find a server, create `pgkeeper_demo_<id>`, load the seed-like schema, then run
each job's section through `pgkeeper invoke` with the files in `events/`, printing readable reports.

Sections are modules of this package with `run(demo: Demo) -> None`, run in SECTIONS order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from importlib import import_module
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.abc import Query
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["refresh", "cache", "vacuum", "cleanup", "backup", "status"]
LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Demo:
    """What a section needs: the demo database, its env-vars file, and `invoke`."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.plan = ROOT / "plan" / "pgkeeper-plan.yaml"
        self.env: dict[str, str] = {"DATABASE_URL": url, "PGKEEPER_PLAN": str(self.plan)}

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True)

    def env_file(self) -> Path:
        path = self.workdir / "env.json"
        path.write_text(json.dumps({"Parameters": self.env}, indent=2))
        return path

    def invoke(self, function: str, event: str) -> dict:
        """`pgkeeper invoke FUNCTION --event events/EVENT --env-vars env.json`, result as a dict."""
        cmd = [sys.executable, "-m", "pgkeeper.cli", "invoke", function, "--event", str(ROOT / "events" / event),
               "--env-vars", str(self.env_file()), "--template", str(ROOT / "template.yaml")]
        print(f"\n$ pgkeeper invoke {function} --event events/{event} --env-vars env.json")
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode not in (0, 1):
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"demo: pgkeeper invoke failed (exit {proc.returncode})")
        return json.loads(proc.stdout)

    def sql(self, query: Query) -> list[tuple]:
        with self.connect() as c:
            return c.execute(query).fetchall()


def table(rows: list[dict], columns: list[str], title: str = "") -> None:
    """Print rows as an aligned text table."""
    if title:
        print(f"\n{title}")
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def job_report(result: dict, title: str) -> dict | None:
    """The job's report from an invoke result; None, after printing Lambda's error shape under
    `title`, when the invocation failed before there was one."""
    report = result.get("report")
    if report is None:
        print(f"\n{title}\n  invocation failed: {result.get('errorType')}: {result.get('errorMessage')}")
    return report


def server_url() -> str:
    url = os.environ.get("DATABASE_URL") or LOCAL
    try:
        with psycopg.connect(url, connect_timeout=3) as c:
            c.execute("SELECT 1")
    except psycopg.OperationalError:
        raise SystemExit(
            f"demo: no PostgreSQL at {'$DATABASE_URL' if os.environ.get('DATABASE_URL') else LOCAL}; "
            "start one (apt-get install postgresql, or `make services`) or set DATABASE_URL"
        ) from None
    return url


def main() -> int:
    admin = server_url()
    name = f"pgkeeper_demo_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    url = make_conninfo(**params)
    print(f"demo: created database {name}")
    try:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute((ROOT / "demo" / "schema.sql").read_text())
        with tempfile.TemporaryDirectory(prefix="pgkeeper-demo-") as tmp:
            demo = Demo(url, Path(tmp))
            for section in SECTIONS:
                print(f"\n=== {section} " + "=" * (60 - len(section)))
                import_module(f"demo.{section}").run(demo)
    finally:
        if not os.environ.get("PGKEEPER_DEMO_KEEP"):
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            print(f"\ndemo: dropped database {name} (set PGKEEPER_DEMO_KEEP=1 to keep it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
