"""`pgkeeper restore --latest|--key K --to URL`: restore a backup into an (empty) database.

The object's SHA-256 must match its manifest before pg_restore can commit (with --jobs 1: one
pass, one transaction, no temp file; with more jobs the verified archive goes to a temp file that
pg_restore --jobs reads); afterwards every table's row count is compared with the manifest's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import psycopg

from ..backup import pgtools
from ..backup.encryption import parse_identities
from ..backup.errors import BackupError, RestoreError, VerificationError
from ..backup.restore import require_identities, restore_backup, user_tables
from ..db.dsn import redact, session_conninfo
from ..errors import ConfigError, DatabaseUnavailableError, first_line
from ..local.invoke import stop_on_signals
from ..plan import load_plan
from ..plan.database import DatabaseSettings
from .backups import add_location_args, locate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore a backup from S3 into a database")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--latest", action="store_true", help="the newest complete backup")
    which.add_argument("--key", help="a backup's key (dump or manifest), as `pgkeeper backups list` shows")
    p.add_argument("--to", required=True, metavar="URL", help="postgres:// URL of the database to restore into")
    add_location_args(p)
    p.add_argument("--with-owners", action="store_true",
                   help="also restore owners and grants (the roles must exist on the target server)")
    p.add_argument("--allow-nonempty", action="store_true",
                   help="restore even if the target database already has tables")
    p.add_argument("--jobs", type=int, default=default_jobs(), metavar="N",
                   help="parallel pg_restore jobs (default: the CPU count, at most 8); 1: one stream in one "
                        "transaction, no temporary file")
    p.add_argument("--identity", "-i", metavar="FILE",
                   help="age identity file (age-keygen output, or an SSH private key) for an encrypted backup")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_restore)


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class ProgressLine:
    """`restoring  45.2 / 120.0 MB (37%)  80.1 MB/s` on one rewritten line (a line per 10% if not a tty)."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last_time = 0.0
        self._last_step = -1
        self._line = ""

    def __call__(self, compressed: int, decompressed: int) -> None:
        now = time.monotonic()
        pct = min(100.0, compressed * 100 / self.total)
        rate = decompressed / 1e6 / max(now - self.started, 1e-6)
        self._line = (f"restoring {compressed / 1e6:8.1f} / {self.total / 1e6:.1f} MB ({pct:3.0f}%)  "
                      f"{rate:6.1f} MB/s restored")
        if self.tty:
            if now - self._last_time >= 0.2:
                self._last_time = now
                print("\r" + self._line, end="", file=sys.stderr, flush=True)
        elif int(pct // 10) > self._last_step:
            self._last_step = int(pct // 10)
            print(self._line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and self._line:
            print("\r" + self._line, file=sys.stderr, flush=True)


def _read_identities(path: str) -> list:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(f"--identity {path}: {exc.strerror}") from None
    return parse_identities(text, path)


def run_restore(args: argparse.Namespace) -> int:
    loc = locate(args)
    store = loc.store
    ref = store.latest() if args.latest else store.find(args.key)
    manifest = store.read_manifest(ref)
    identities = _read_identities(args.identity) if args.identity else None
    require_identities(manifest, identities, ref.key)  # before anything touches the target
    tool = pgtools.find("pg_restore")
    pgtools.check_restore_version(tool, manifest.dump_major())
    target = session_conninfo(args.to)
    where = redact(target)
    # pgkeeper's connections to the target get the plan's timeouts, if a plan is named; else the defaults.
    settings = load_plan(args.plan).database if args.plan else DatabaseSettings()
    try:
        existing = user_tables(target, settings)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"cannot connect to {where}: {first_line(exc)}") from exc
    if not args.allow_nonempty and existing:
        raise ConfigError(f"{where} already has {existing} table(s)/view(s)/sequence(s): restore into an empty "
                          "database (createdb NAME) or pass --allow-nonempty")
    jobs = max(1, args.jobs)
    print(f"restoring s3://{store.bucket}/{ref.key} ({ref.size / 1e6:.1f} MB, taken {manifest.started_at}, "
          f"{len(manifest.tables)} tables) into {where}", file=sys.stderr)
    progress = ProgressLine(ref.size)
    # A supervisor's SIGTERM (a CI timeout, `timeout 600 pgkeeper restore`) unwinds like Ctrl-C, so the
    # temporary archive is removed and pg_restore stopped, instead of both outliving the command.
    try:
        with stop_on_signals():
            result = restore_backup(store, ref, target, tool, manifest=manifest, with_owners=args.with_owners,
                                    on_progress=progress, settings=settings, jobs=jobs, identities=identities)
    except VerificationError:
        raise  # checksum mismatch: its own reason code
    except BackupError as exc:  # (a RestoreError is not one: the parallel paths say what the target holds)
        raise RestoreError(f"{exc}; nothing was committed to {where}") from exc
    finally:
        progress.done()
    result["target"] = where
    if args.json:
        print(json.dumps(result, indent=2))
    if result["mismatches"]:
        for m in result["mismatches"]:
            what = "row count" if m["what"] == "rows" else "content checksum"
            print(f"  {what} differs: {m['schema']}.{m['name']}: manifest {m['manifest']}, restored "
                  f"{m['restored']}", file=sys.stderr)
        print(f"restore finished but {len(result['mismatches'])} table(s) differ from the manifest", file=sys.stderr)
        return 1
    how = (f"{result['jobs']} parallel jobs from a verified temporary copy" if result["jobs"] > 1
           else "one stream, one transaction")
    matched = "every row count and content checksum" if result["checksums"] else "every row count"
    print(f"restored {result['tables']} tables, {result['rows']} rows in {result['seconds']:.1f} s ({how}); SHA-256 "
          f"and {matched} match the manifest", file=sys.stderr)
    return 0
