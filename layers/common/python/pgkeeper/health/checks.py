"""One function per health check: run its set-based query, give every finding a severity.

Severities: ok < info < warning < critical. `info` is worth knowing (an unused index, a table the
next vacuum run will clean); `warning` wants a person's attention this week; `critical` today.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
    model_serializer,
    model_validator,
)

from ..catalog_rules import reindex_leftover
from ..idents import display
from ..plan.base import column_ident, split_name
from ..plan.vacuum import VacuumPlan
from . import queries


class Severity(StrEnum):
    """How bad a finding is; declared mildest first, and `rank` orders them (never compare the strings)."""

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self)


SEVERITIES: tuple[Severity, ...] = tuple(Severity)
XID_LIMIT = 2**31 - 3_000_000
"""Where PostgreSQL stops assigning transaction ids (the wraparound stop limit)."""


def worst(severities: Iterable[Severity]) -> Severity:
    return max(severities, key=lambda s: s.rank, default=Severity.OK)


@dataclass
class Ctx:
    conn: psycopg.Connection
    plan: VacuumPlan
    settings: dict[str, Any]

    @property
    def bs(self) -> int:
        return int(self.settings["block_size"])

    @property
    def top(self) -> int:
        return self.plan.health.top

    def rows(self, query: str | sql.SQL | sql.Composed, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params).fetchall()


class Finding(BaseModel):
    """One finding of a check: its severity, the object it is about, a readable message, and the check's
    own figures in `data`, serialised flat beside the three (`{"severity", "object", "message", **data}`),
    datetimes as ISO 8601 text and floats to 4 decimals."""

    model_config = ConfigDict(extra="forbid")

    severity: Severity
    object: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _data_keys_are_not_ours(self) -> Finding:
        if clash := {"severity", "object", "message"} & self.data.keys():
            raise ValueError(f"data must not repeat the finding's own keys: {sorted(clash)}")
        return self

    @field_serializer("data", mode="wrap")
    def _data(self, data: dict[str, Any], handler: SerializerFunctionWrapHandler) -> Any:
        return handler(_jsonable(data))

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        out.update(out.pop("data"))
        return out


class Check(BaseModel):
    """One check's result: its severity is the worst of its findings unless the check says otherwise
    (a check that could not run is `info`). `metrics` are emitted, not serialised."""

    model_config = ConfigDict(extra="forbid")

    check: str
    title: str
    severity: Severity
    summary: str
    items: list[Finding] = Field(default_factory=list)
    metrics: dict[str, tuple[float, str]] = Field(default_factory=dict, exclude=True)
    """Metric name -> (value, CloudWatch unit)."""

    @classmethod
    def of(cls, check: str, title: str, summary: str, items: Iterable[Finding] = (), *,
           metrics: dict[str, tuple[float, str]] | None = None, severity: Severity | None = None) -> Check:
        found = list(items)
        return cls(check=check, title=title, severity=severity or worst(i.severity for i in found),
                   summary=summary, items=found, metrics=metrics or {})


def item(severity: Severity, obj: str, message: str, **data: Any) -> Finding:
    return Finding(severity=severity, object=obj, message=message, data=data)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, datetime):
            v = v.isoformat()
        elif isinstance(v, float):
            v = round(v, 4)
        out[k] = v
    return out


def _size(n: float | None) -> str:
    n = float(n or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _dur(seconds: float | None) -> str:
    s = int(seconds or 0)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# ---------------------------------------------------------------------------------------------- checks


def settings(ctx: Ctx) -> Check:
    s = ctx.settings
    items = []
    if s["track_counts"] != "on":
        items.append(item(Severity.CRITICAL, "track_counts", "track_counts is off: no table statistics, "
                                                               "autovacuum and pgkeeper's vacuum selection are blind"))
    if s["autovacuum"] != "on":
        items.append(item(Severity.WARNING, "autovacuum", "autovacuum is off: only scheduled runs remove dead tuples "
                                                          "and freeze old rows; anti-wraparound vacuums still start"))
    summary = "; ".join(i.message.split(":")[0] for i in items) or "autovacuum and statistics collection on"
    return Check.of("settings", "Maintenance settings", summary, items)


def wraparound(ctx: Ctx) -> Check:
    fmax, mmax = ctx.settings["freeze_max_age"], ctx.settings["mxid_freeze_max_age"]
    items = []
    worst_pct = worst_mpct = 0.0
    for r in ctx.rows(queries.DATABASES):
        pct = 100.0 * r["xid_age"] / XID_LIMIT
        mpct = 100.0 * r["mxid_age"] / XID_LIMIT
        worst_pct, worst_mpct = max(worst_pct, pct), max(worst_mpct, mpct)
        sev = _age_severity(r["xid_age"], fmax, pct)
        msev = _age_severity(r["mxid_age"], mmax, mpct)
        items.append(item(
            worst([sev, msev]), r["datname"],
            f"xid age {r['xid_age']:,} ({pct:.1f}% of the wraparound limit), "
            f"multixact age {r['mxid_age']:,} ({mpct:.1f}%)",
            xid_age=r["xid_age"], xid_pct=pct, mxid_age=r["mxid_age"], mxid_pct=mpct,
        ))
    summary = f"oldest xid age {worst_pct:.1f}% and multixact age {worst_mpct:.1f}% of the wraparound limit"
    return Check.of("wraparound", "Transaction ID wraparound per database", summary, items,
                    metrics={"WraparoundAgePct": (worst_pct, "Percent"),
                             "MultixactWraparoundAgePct": (worst_mpct, "Percent")})


def _age_severity(age: int, freeze_max_age: int, pct: float) -> Severity:
    """Past freeze_max_age an anti-wraparound autovacuum is due (normal); far past it, it is stuck."""
    if pct >= 50:
        return Severity.CRITICAL
    if age >= 1.5 * freeze_max_age or pct >= 25:
        return Severity.WARNING
    if age >= freeze_max_age:
        return Severity.INFO
    return Severity.OK


def wraparound_tables(ctx: Ctx) -> Check:
    fraction = ctx.plan.thresholds.freeze_age_fraction
    items = []
    for r in ctx.rows(queries.WRAPAROUND_TABLES, {"top": ctx.top}):
        frac = r["freeze_frac"]
        # Past 1.0 autovacuum's anti-wraparound run is due (normal once); far past it, it is not keeping up.
        sev = Severity.WARNING if frac >= 1.5 else Severity.INFO if frac >= fraction else Severity.OK
        note = " (temporary table: only its session can vacuum it)" if r["relpersistence"] == "t" else ""
        items.append(item(
            sev, display(r["nspname"], r["relname"]),
            f"xid age {r['xid_age']:,} / multixact age {r['mxid_age']:,}: {frac:.0%} of its freeze max age "
            f"{r['freeze_max_age']:,}" + note,
            xid_age=r["xid_age"], mxid_age=r["mxid_age"], freeze_max_age=r["freeze_max_age"], freeze_fraction=frac,
        ))
    due = sum(1 for i in items if i.data["freeze_fraction"] >= fraction)
    summary = (f"{due} of the {len(items)} oldest tables past {fraction:.0%} of their freeze max age "
               "(the vacuum job freezes them)") if due else "no table near its freeze max age"
    return Check.of("wraparound_tables", "Oldest tables (freeze age)", summary, items)


def sessions(ctx: Ctx) -> list[Check]:
    h = ctx.plan.health
    long_items, idle_items = [], []
    oldest = 0.0
    for r in ctx.rows(queries.SESSIONS):
        xact_s, state_s = r["xact_s"] or 0.0, r["state_s"] or 0.0
        who = f"pid {r['pid']} ({r['application_name'] or r['backend_type']}, user {r['usename'] or '?'})"
        data = {k: r[k] for k in ("pid", "usename", "application_name", "client_addr", "backend_type", "state",
                                  "xmin_age", "wait_event_type", "wait_event")}
        data.update(transaction_s=round(xact_s, 1), state_s=round(state_s, 1))
        if r["state"].startswith("idle in transaction"):
            if xact_s >= h.long_transaction_critical_s:
                sev = Severity.CRITICAL
            elif state_s >= h.idle_in_transaction_s:
                sev = Severity.WARNING
            else:
                sev = Severity.INFO
            idle_items.append(item(sev, who, f"{r['state']} for {_dur(state_s)} (transaction open {_dur(xact_s)}); "
                                             "holds back vacuum of every table in the database", **data))
            oldest = max(oldest, xact_s)
        elif xact_s >= h.long_transaction_s:
            sev = Severity.CRITICAL if xact_s >= h.long_transaction_critical_s else Severity.WARNING
            long_items.append(item(sev, who, f"transaction open {_dur(xact_s)} ({r['state'] or 'state hidden'})",
                                   **data))
            oldest = max(oldest, xact_s)
    idle_over = sum(1 for i in idle_items if i.severity != Severity.INFO)
    return [
        Check.of("long_transactions", "Long-running transactions (xmin horizon)",
                 f"{len(long_items)} open longer than {_dur(h.long_transaction_s)}" if long_items
                 else f"none open longer than {_dur(h.long_transaction_s)}",
                 long_items,
                 metrics={"LongRunningTransactions": (len(long_items), "Count"),
                          "OldestTransactionSeconds": (oldest, "Seconds")}),
        Check.of("idle_in_transaction", "Idle-in-transaction sessions (xmin horizon)",
                 f"{len(idle_items)} idle in transaction ({idle_over} longer than {_dur(h.idle_in_transaction_s)})"
                 if idle_items else "none",
                 idle_items,
                 metrics={"IdleInTransactionSessions": (idle_over, "Count")}),
    ]


def replication_slots(ctx: Ctx) -> Check:
    fmax = ctx.settings["freeze_max_age"]
    items = []
    for r in ctx.rows(queries.SLOTS):
        age = max(r["xmin_age"] or 0, r["catalog_xmin_age"] or 0)
        problems = []
        sev = Severity.OK
        if not r["active"]:
            sev, problems = Severity.WARNING, ["inactive (retains WAL and may hold back vacuum until dropped)"]
        if r["wal_status"] in ("unreserved", "lost"):
            sev = Severity.WARNING
            problems.append(f"wal_status {r['wal_status']}")
        if age >= fmax / 2:
            sev = Severity.CRITICAL
            problems.append(f"holds the xmin horizon {age:,} transactions back")
        msg = "; ".join(problems) or "active"
        if r["retained_wal_bytes"] is not None:
            msg += f"; retains {_size(r['retained_wal_bytes'])} of WAL"
        items.append(item(sev, r["slot_name"], msg, slot_type=r["slot_type"], database=r["database"],
                          active=r["active"], xmin_age=age, retained_wal_bytes=r["retained_wal_bytes"]))
    inactive = sum(1 for i in items if not i.data["active"])
    return Check.of("replication_slots", "Replication slots (xmin horizon, WAL)",
                    f"{len(items)} slot(s), {inactive} inactive" if items else "none", items,
                    metrics={"InactiveReplicationSlots": (inactive, "Count")})


def prepared_transactions(ctx: Ctx) -> Check:
    h = ctx.plan.health
    items = []
    for r in ctx.rows(queries.PREPARED):
        age_s = r["age_s"] or 0.0
        sev = (Severity.CRITICAL if age_s >= h.long_transaction_critical_s
               else Severity.WARNING if age_s >= h.long_transaction_s else Severity.INFO)
        items.append(item(sev, r["gid"], f"prepared {_dur(age_s)} ago in database {r['database']} by {r['owner']}; "
                                         "holds back vacuum until COMMIT PREPARED / ROLLBACK PREPARED",
                          database=r["database"], xid_age=r["xid_age"], age_s=round(age_s, 1)))
    return Check.of("prepared_transactions", "Prepared transactions (xmin horizon)",
                    f"{len(items)} prepared transaction(s)" if items else "none", items,
                    metrics={"PreparedTransactions": (len(items), "Count")})


def dead_tuples(ctx: Ctx) -> Check:
    t = ctx.plan.thresholds
    rows = ctx.rows(queries.DEAD_TUPLES, {"top": ctx.top, "dead_tuples": t.dead_tuples, "dead_ratio": t.dead_ratio})
    items = []
    for r in rows:
        over = r["n_dead_tup"] >= t.dead_tuples and r["dead_ratio"] >= t.dead_ratio and r["n_dead_tup"] > 0
        sev = Severity.OK
        if over:
            sev = Severity.WARNING if r["dead_ratio"] >= 0.5 and r["n_dead_tup"] >= 100_000 else Severity.INFO
        last_v = max([d for d in (r["last_vacuum"], r["last_autovacuum"]) if d], default=None)
        last_a = max([d for d in (r["last_analyze"], r["last_autoanalyze"]) if d], default=None)
        items.append(item(
            sev, display(r["schemaname"], r["relname"]),
            f"{r['n_dead_tup']:,} dead / {r['n_live_tup']:,} live ({r['dead_ratio']:.0%}); "
            f"last vacuum {last_v.isoformat(timespec='minutes') if last_v else 'never'}, "
            f"last analyze {last_a.isoformat(timespec='minutes') if last_a else 'never'}",
            n_live_tup=r["n_live_tup"], n_dead_tup=r["n_dead_tup"], dead_ratio=r["dead_ratio"],
            n_mod_since_analyze=r["n_mod_since_analyze"], last_vacuum=r["last_vacuum"],
            last_autovacuum=r["last_autovacuum"], last_analyze=r["last_analyze"],
            last_autoanalyze=r["last_autoanalyze"],
        ))
    over = rows[0]["over_threshold"] if rows else 0
    total = rows[0]["total_dead"] if rows else 0
    never = rows[0]["never_analyzed"] if rows else 0
    summary = f"{int(total or 0):,} dead tuples; {over} table(s) over the vacuum thresholds"
    if never:
        summary += f"; {never} table(s) with rows never analyzed"
    return Check.of("dead_tuples", "Dead tuples and last (auto)vacuum / analyze", summary, items,
                    metrics={"DeadTuples": (float(total or 0), "Count"),
                             "TablesNeedingVacuum": (over, "Count")})


def _bloat_severity(ctx: Ctx, pct: float, nbytes: int) -> Severity:
    h = ctx.plan.health
    if pct >= h.bloat_warning_pct and nbytes >= h.bloat_warning_bytes:
        return Severity.WARNING
    if pct >= h.bloat_warning_pct / 2 and nbytes >= 8 * 1024 * 1024:
        return Severity.INFO
    return Severity.OK


def table_bloat(ctx: Ctx) -> Check:
    items = []
    for r in ctx.rows(queries.TABLE_BLOAT, {"bs": ctx.bs, "top": ctx.top}):
        items.append(item(
            _bloat_severity(ctx, r["bloat_pct"], r["bloat_bytes"]), display(r["nspname"], r["relname"]),
            f"~{_size(r['bloat_bytes'])} of {_size(r['real_bytes'])} estimated bloat ({r['bloat_pct']:.0f}%)",
            real_bytes=r["real_bytes"], bloat_bytes=r["bloat_bytes"], bloat_pct=r["bloat_pct"],
        ))
    total = sum(i.data["bloat_bytes"] for i in items)
    return Check.of("table_bloat", "Table bloat (estimate from statistics)",
                    f"~{_size(total)} estimated in the {len(items)} most bloated tables" if items else "none estimated",
                    items, metrics={"TableBloatBytes": (float(total), "Bytes")})


def index_bloat(ctx: Ctx) -> Check:
    items = []
    for r in ctx.rows(queries.INDEX_BLOAT, {"bs": ctx.bs, "top": ctx.top}):
        items.append(item(
            _bloat_severity(ctx, r["bloat_pct"], r["bloat_bytes"]), display(r["nspname"], r["idxname"]),
            f"~{_size(r['bloat_bytes'])} of {_size(r['real_bytes'])} estimated bloat ({r['bloat_pct']:.0f}%); "
            "REINDEX INDEX CONCURRENTLY reclaims it",
            table=display(r["nspname"], r["tblname"]), real_bytes=r["real_bytes"], bloat_bytes=r["bloat_bytes"],
            bloat_pct=r["bloat_pct"],
        ))
    total = sum(i.data["bloat_bytes"] for i in items)
    return Check.of("index_bloat", "B-tree index bloat (estimate from statistics)",
                    f"~{_size(total)} estimated in the {len(items)} most bloated indexes" if items
                    else "none estimated",
                    items, metrics={"IndexBloatBytes": (float(total), "Bytes")})


def index_checks(ctx: Ctx) -> list[Check]:
    """Unused, duplicate and invalid indexes: one catalog query, three checks."""
    idx = ctx.rows(queries.INDEXES, {"bs": ctx.bs})
    return [_unused(ctx, idx), _duplicates(idx), _invalid(idx)]


def _unused(ctx: Ctx, idx: list[dict[str, Any]]) -> Check:
    reset = ctx.settings["stats_reset"]
    since = reset.isoformat(timespec="minutes") if reset else "statistics began"
    young = reset is not None and (ctx.settings["now"] - reset).days < 7
    items = []
    for r in idx:
        if r["idx_scan"] or r["indisunique"] or r["indisprimary"] or r["backs_constraint"] or not r["indisvalid"]:
            continue
        big = r["size_bytes"] >= ctx.plan.health.bloat_warning_bytes
        sev = Severity.WARNING if big and not young else Severity.INFO
        items.append(item(sev, display(r["nspname"], r["index_name"]),
                          f"never scanned since {since}; {_size(r['size_bytes'])}, slows every write to "
                          f"{display(r['nspname'], r['table_name'])}",
                          table=display(r["nspname"], r["table_name"]), size_bytes=r["size_bytes"]))
    items.sort(key=lambda i: (-i.data["size_bytes"], i.object))
    summary = f"{len(items)} index(es) never scanned since {since}" if items else f"none (since {since})"
    if items and young:
        summary += " (statistics are less than 7 days old: judge with care)"
    chk = Check.of("unused_indexes", "Unused indexes", summary, items[: ctx.top * 5],
                   metrics={"UnusedIndexes": (len(items), "Count")})
    chk.summary += "" if len(items) <= ctx.top * 5 else f"; {ctx.top * 5} largest listed"
    return chk


def _duplicates(idx: list[dict[str, Any]]) -> Check:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in idx:
        if not r["indisvalid"]:
            continue
        key = (r["indrelid"], r["relam"], tuple(r["keys"]), tuple(r["classes"]), r["collations"], r["exprs"],
               r["pred"], r["indnkeyatts"])
        groups.setdefault(key, []).append(r)
    items = []
    for members in groups.values():
        if len(members) < 2:
            continue
        # Keep the one a constraint needs (primary key, unique), else the oldest.
        members.sort(key=lambda r: (not r["indisprimary"], not r["backs_constraint"], not r["indisunique"],
                                    r["indexrelid"]))
        keep, drop = members[0], members[1:]
        names = [display(r["nspname"], r["index_name"]) for r in drop]
        items.append(item(Severity.WARNING, ", ".join(names),
                          f"duplicate{'s' if len(drop) > 1 else ''} of {display(keep['nspname'], keep['index_name'])} "
                          f"on {display(keep['nspname'], keep['table_name'])}: same columns, same definition",
                          table=display(keep["nspname"], keep["table_name"]),
                          keep=display(keep["nspname"], keep["index_name"]), duplicates=names,
                          wasted_bytes=sum(r["size_bytes"] for r in drop)))
    # Covered: a plain b-tree whose key columns are the leading key columns of another.
    by_table: dict[int, list[dict[str, Any]]] = {}
    for r in idx:
        if r["indisvalid"]:
            by_table.setdefault(r["indrelid"], []).append(r)
    for rows in by_table.values():
        for a in rows:
            if (a["amname"] != "btree" or a["indisunique"] or a["exprs"] or a["indnatts"] != a["indnkeyatts"]
                    or a["backs_constraint"]):
                continue
            n = a["indnkeyatts"]
            for b in rows:
                if (b is a or b["relam"] != a["relam"] or b["exprs"] or b["pred"] != a["pred"]
                        or b["indnkeyatts"] <= n or list(b["keys"][:n]) != list(a["keys"][:n])
                        or list(b["classes"][:n]) != list(a["classes"][:n])):
                    continue
                items.append(item(Severity.INFO, display(a["nspname"], a["index_name"]),
                                  f"its columns lead {display(b['nspname'], b['index_name'])}, which serves the "
                                  "same lookups", table=display(a["nspname"], a["table_name"]),
                                  keep=display(b["nspname"], b["index_name"]),
                                  duplicates=[display(a["nspname"], a["index_name"])],
                                  wasted_bytes=a["size_bytes"]))
                break
    exact = sum(1 for i in items if i.severity == Severity.WARNING)
    return Check.of("duplicate_indexes", "Duplicate and redundant indexes",
                    f"{exact} set(s) of duplicates, {len(items) - exact} index(es) covered by another" if items
                    else "none", items, metrics={"DuplicateIndexes": (exact, "Count")})


def _invalid(idx: list[dict[str, Any]]) -> Check:
    items = []
    for r in idx:
        if r["indisvalid"]:
            continue
        name = display(r["nspname"], r["index_name"])
        if r["being_built"]:
            sev, msg = Severity.INFO, "invalid while an index build on its table is in progress"
        elif reindex_leftover(r["index_name"]):
            sev, msg = Severity.WARNING, "left by an interrupted REINDEX CONCURRENTLY: DROP INDEX CONCURRENTLY it"
        else:
            sev = Severity.WARNING
            msg = ("invalid (a failed CREATE INDEX CONCURRENTLY): queries cannot use it"
                   + (", yet every write still maintains it" if r["indisready"] else "")
                   + ("; rows already in the table may break its uniqueness" if r["indisunique"] else "")
                   + "; rebuild with REINDEX INDEX CONCURRENTLY (vacuum.reindex_invalid) or drop it")
        items.append(item(sev, name, msg, table=display(r["nspname"], r["table_name"]), unique=r["indisunique"],
                          size_bytes=r["size_bytes"]))
    return Check.of("invalid_indexes", "Invalid indexes", f"{len(items)} invalid index(es)" if items else "none",
                    items, metrics={"InvalidIndexes": (len(items), "Count")})


def foreign_keys(ctx: Ctx) -> Check:
    items = []
    for r in ctx.rows(queries.FOREIGN_KEYS):
        table = display(r["nspname"], r["relname"])
        small = 0 <= r["reltuples"] < 1000
        items.append(item(
            Severity.INFO if small else Severity.WARNING, f"{table} ({', '.join(r['columns'])})",
            f"foreign key {r['conname']} to {display(r['ref_schema'], r['ref_table'])} has no index starting with "
            "its columns: every delete or key update there scans and locks this table",
            table=table, constraint=r["conname"], columns=r["columns"],
            references=display(r["ref_schema"], r["ref_table"]), rows_estimate=max(int(r["reltuples"]), 0),
        ))
    # Biggest referencing tables first: that is where a delete on the referenced side hurts most.
    items.sort(key=lambda i: (i.severity.rank, i.data["rows_estimate"]), reverse=True)
    limit = ctx.top * 5
    summary = f"{len(items)} foreign key(s) without a supporting index" if items else "none"
    if len(items) > limit:
        summary += f"; the {limit} on the largest tables listed"
    return Check.of("unindexed_foreign_keys", "Foreign keys without an index", summary, items[:limit],
                    metrics={"UnindexedForeignKeys": (len(items), "Count")})


def sequences(ctx: Ctx) -> Check:
    h = ctx.plan.health
    items = []
    top_pct = 0.0
    for r in ctx.rows(queries.SEQUENCES):
        limit = r["limit_value"]
        pct = 100.0 * float(r["last_value"]) / float(limit) if limit else 0.0
        top_pct = max(top_pct, pct)
        if pct < 50:
            continue
        sev = (Severity.CRITICAL if pct >= h.sequence_critical_pct
               else Severity.WARNING if pct >= h.sequence_warning_pct else Severity.INFO)
        bound = (f"column {display(r['schemaname'], r['table_name'])}.{r['column_name']} ({r['column_type']})"
                 if r["column_type"] else r["data_type"])
        items.append(item(sev, display(r["schemaname"], r["sequencename"]),
                          f"{pct:.1f}% used: {r['last_value']:,} of {limit:,} ({bound})",
                          last_value=r["last_value"], limit=limit, used_pct=pct))
    items.sort(key=lambda i: -i.data["used_pct"])
    return Check.of("sequences", "Sequences close to overflow",
                    f"{len(items)} sequence(s) past half their range" if items else
                    f"all sequences below 50% of their range (highest {top_pct:.1f}%)",
                    items[: ctx.top], metrics={"SequenceMaxUsedPct": (top_pct, "Percent")})


def expected_indexes(ctx: Ctx) -> Check:
    expected = ctx.plan.expected_indexes
    if not expected:
        return Check.of("expected_indexes", "Expected indexes (plan)",
                        "none listed in the plan (vacuum.expected_indexes)")
    keys = [split_name(e.table) for e in expected]
    rows = ctx.rows(queries.EXPECTED_INDEXES, {"schemas": [k[0] for k in keys], "tables": [k[1] for k in keys]})
    tables: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        tables.setdefault((r["nspname"], r["relname"]), [])
        if r["index_name"] is not None:
            tables[(r["nspname"], r["relname"])].append(r)
    items = []
    for exp, key in zip(expected, keys, strict=True):
        cols = [column_ident(c) for c in exp.columns]
        label = f"{display(*key)} ({', '.join(cols)})" + (f" as {exp.name}" if exp.name else "")
        data = {"table": display(*key), "columns": cols, "name": exp.name}
        if key not in tables:
            items.append(item(Severity.WARNING, label, "table not found", **data))
            continue
        indexes = tables[key]
        named = [r for r in indexes if exp.name is not None and r["index_name"] == exp.name]
        covering = [r for r in indexes if list(r["columns"][: len(cols)]) == cols and not r["partial"]]
        if named:
            r = named[0]
            if list(r["columns"][: len(cols)]) != cols:
                items.append(item(Severity.WARNING, label,
                                  f"index {exp.name} exists but is on ({', '.join(r['columns'])})",
                                  found=r["index_name"], **data))
            elif not r["indisvalid"]:
                items.append(item(Severity.WARNING, label, f"index {exp.name} exists but is INVALID", found=exp.name,
                                  **data))
            else:
                items.append(item(Severity.OK, label, "present", found=exp.name, **data))
        elif covering and any(r["indisvalid"] for r in covering):
            r = next(r for r in covering if r["indisvalid"])
            note = "" if exp.name is None else f" (not named {exp.name})"
            items.append(item(Severity.OK, label, f"served by {r['index_name']}{note}", found=r["index_name"], **data))
        elif covering:
            found = covering[0]["index_name"]
            items.append(item(Severity.WARNING, label, f"only an INVALID index ({found}) has these columns",
                              found=found, **data))
        else:
            items.append(item(Severity.WARNING, label, "MISSING: no index on these columns", **data))
    missing = sum(1 for i in items if i.severity != Severity.OK)
    return Check.of("expected_indexes", "Expected indexes (plan)",
                 f"{missing} of {len(items)} expected index(es) missing or unusable" if missing
                 else f"all {len(items)} expected index(es) present", items,
                 metrics={"MissingExpectedIndexes": (missing, "Count")})


def cache_hit_ratio(ctx: Ctx) -> Check:
    rows = ctx.rows(queries.CACHE)
    if not rows:
        return Check.of("cache_hit_ratio", "Cache hit ratio", "no statistics for this database")
    r = rows[0]
    total = (r["blks_hit"] or 0) + (r["blks_read"] or 0)
    ratio = (r["blks_hit"] or 0) / total if total else 1.0
    heap_total = float(r["heap_hit"] + r["heap_read"])
    idx_total = float(r["idx_hit"] + r["idx_read"])
    data = {"ratio": ratio, "blocks": total,
            "table_ratio": float(r["heap_hit"]) / heap_total if heap_total else None,
            "index_ratio": float(r["idx_hit"]) / idx_total if idx_total else None}
    if total < 100_000:
        sev, msg = Severity.OK, f"{ratio:.1%} over {total:,} block reads (too few to judge)"
    else:
        warn = ctx.plan.health.cache_hit_warning
        sev = Severity.WARNING if ratio < warn else Severity.INFO if ratio < 0.99 else Severity.OK
        msg = f"{ratio:.2%} of {total:,} block reads served from shared buffers"
    return Check.of("cache_hit_ratio", "Cache hit ratio", msg, [item(sev, ctx.settings["database"], msg, **data)],
                    metrics={"CacheHitRatioPct": (100.0 * ratio, "Percent")})


def table_sizes(ctx: Ctx) -> Check:
    rows = ctx.rows(queries.TABLE_SIZES, {"bs": ctx.bs, "top": ctx.top})
    db_size = ctx.conn.execute(queries.DATABASE_SIZE).fetchone()
    items = []
    for r in rows:
        total = r["table_bytes"] + r["toast_bytes"] + r["index_bytes"]
        items.append(item(Severity.OK, display(r["nspname"], r["relname"]),
                          f"{_size(total)} (table {_size(r['table_bytes'])}, toast {_size(r['toast_bytes'])}, "
                          f"indexes {_size(r['index_bytes'])}), ~{max(r['rows_estimate'], 0):,} rows",
                          total_bytes=total, table_bytes=r["table_bytes"], toast_bytes=r["toast_bytes"],
                          index_bytes=r["index_bytes"], rows_estimate=r["rows_estimate"]))
    count = rows[0]["tables"] if rows else 0
    size = db_size[0] if db_size else 0
    return Check.of("table_sizes", "Largest tables",
                    f"database {_size(size)}, {count} tables", items,
                    metrics={"DatabaseSizeBytes": (float(size), "Bytes")})


CHECKS: list[tuple[str, Callable[[Ctx], Check | list[Check]]]] = [
    ("settings", settings),
    ("wraparound", wraparound),
    ("wraparound_tables", wraparound_tables),
    ("sessions", sessions),
    ("replication_slots", replication_slots),
    ("prepared_transactions", prepared_transactions),
    ("dead_tuples", dead_tuples),
    ("table_bloat", table_bloat),
    ("index_bloat", index_bloat),
    ("indexes", index_checks),
    ("unindexed_foreign_keys", foreign_keys),
    ("sequences", sequences),
    ("expected_indexes", expected_indexes),
    ("cache_hit_ratio", cache_hit_ratio),
    ("table_sizes", table_sizes),
]
