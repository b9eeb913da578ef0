"""The health report's catalog queries: each one set-based over all tables at once (no per-table loop),
so the whole report stays well under 2 s on a database with thousands of tables.

Sizes are the relations' files (pg_relation_size), not pg_class.relpages: relpages is only as new
as the last VACUUM / ANALYZE / CREATE INDEX, so on a database where autovacuum never ran it misses
the largest tables and shows a grown index at its creation size. pg_relation_size takes an
ACCESS SHARE lock, which would queue behind a migration's ACCESS EXCLUSIVE: a relation with such a
lock held or requested is sized from relpages instead (`_SIZE`), and the check's 1 s lock_timeout
bounds the rest. The bloat estimates are the well-known statistics-based ones (ioguix's
table_bloat.sql / btree_bloat.sql, as used by check_pgactivity and pgwatch): they need fresh ANALYZE
statistics, not the pgstattuple extension.
"""

from __future__ import annotations

from psycopg import sql

from ..catalog_rules import FREEZE_MAX_AGES


def _size(rel: str) -> sql.Composed:
    """The size in bytes of the pg_class row aliased `rel`; from relpages when a migration holds or
    waits for ACCESS EXCLUSIVE on it (pg_relation_size would queue behind that lock)."""
    return sql.SQL(
        "CASE WHEN {rel}.oid IN (SELECT l.relation FROM pg_catalog.pg_locks l WHERE l.locktype = 'relation' "
        "AND l.mode = 'AccessExclusiveLock' AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d "
        "WHERE d.datname = pg_catalog.current_database())) THEN {rel}.relpages::bigint * %(bs)s "
        "ELSE pg_catalog.pg_relation_size({rel}.oid) END"
    ).format(rel=sql.Identifier(rel))

SETTINGS = """
SELECT pg_catalog.current_database() AS database,
       pg_catalog.current_setting('server_version') AS server_version,
       pg_catalog.current_setting('autovacuum_freeze_max_age')::bigint AS freeze_max_age,
       pg_catalog.current_setting('autovacuum_multixact_freeze_max_age')::bigint AS mxid_freeze_max_age,
       pg_catalog.current_setting('autovacuum') AS autovacuum,
       pg_catalog.current_setting('track_counts') AS track_counts,
       pg_catalog.current_setting('block_size')::bigint AS block_size,
       pg_catalog.pg_is_in_recovery() AS in_recovery,
       (SELECT stats_reset FROM pg_catalog.pg_stat_database WHERE datname = pg_catalog.current_database())
           AS stats_reset,
       pg_catalog.now() AS now
"""

DATABASES = """
SELECT d.datname, pg_catalog.age(d.datfrozenxid)::bigint AS xid_age,
       pg_catalog.mxid_age(d.datminmxid)::bigint AS mxid_age, d.datallowconn
  FROM pg_catalog.pg_database d
 ORDER BY 2 DESC
"""

# Worst tables by fraction of their effective freeze max age, judged like the vacuum job's selection.
WRAPAROUND_TABLES = sql.SQL("""
WITH cfg AS (
    SELECT pg_catalog.current_setting('autovacuum_freeze_max_age')::bigint AS fmax,
           pg_catalog.current_setting('autovacuum_multixact_freeze_max_age')::bigint AS mmax
), rel AS (
    SELECT n.nspname, c.relname, c.relpersistence,
           greatest(pg_catalog.age(c.relfrozenxid), coalesce(pg_catalog.age(t.relfrozenxid), 0))::bigint AS xid_age,
           greatest(pg_catalog.mxid_age(c.relminmxid), coalesce(pg_catalog.mxid_age(t.relminmxid), 0))::bigint
               AS mxid_age,
           fm.freeze_max_age, fm.mxid_freeze_max_age
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN cfg
      LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid{freeze_max_ages}
     WHERE c.relkind IN ('r', 'm') AND n.nspname !~ '^pg_toast'
)
SELECT rel.*, greatest(rel.xid_age::float8 / rel.freeze_max_age,
                       rel.mxid_age::float8 / rel.mxid_freeze_max_age) AS freeze_frac
  FROM rel
 ORDER BY freeze_frac DESC, rel.nspname, rel.relname
 LIMIT %(top)s
""").format(freeze_max_ages=FREEZE_MAX_AGES)

# Sessions that hold back the xmin horizon of this database's tables (or of every database:
# walsenders with hot_standby_feedback). VACUUMs in progress are ignored by the horizon. No query
# text: it may carry personal data or secrets.
SESSIONS = """
SELECT a.pid, coalesce(a.usename::text, '') AS usename, coalesce(a.application_name, '') AS application_name,
       a.client_addr::text AS client_addr, a.backend_type, coalesce(a.state, '') AS state,
       extract(epoch FROM pg_catalog.now() - a.xact_start)::float8 AS xact_s,
       extract(epoch FROM pg_catalog.now() - a.state_change)::float8 AS state_s,
       pg_catalog.age(a.backend_xmin)::bigint AS xmin_age,
       a.wait_event_type, a.wait_event
  FROM pg_catalog.pg_stat_activity a
 WHERE a.pid <> pg_catalog.pg_backend_pid()
   AND (a.datname = pg_catalog.current_database() OR a.backend_type = 'walsender')
   AND a.backend_type IN ('client backend', 'walsender')
   AND a.xact_start IS NOT NULL
   AND a.pid NOT IN (SELECT pid FROM pg_catalog.pg_stat_progress_vacuum)
 ORDER BY a.xact_start
"""

SLOTS = """
SELECT s.slot_name, s.slot_type, s.database, s.active, s.wal_status,
       pg_catalog.age(s.xmin)::bigint AS xmin_age, pg_catalog.age(s.catalog_xmin)::bigint AS catalog_xmin_age,
       CASE WHEN pg_catalog.pg_is_in_recovery() OR s.restart_lsn IS NULL THEN NULL
            ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::bigint END
           AS retained_wal_bytes
  FROM pg_catalog.pg_replication_slots s
 ORDER BY s.slot_name
"""

PREPARED = """
SELECT p.gid, p.database, p.owner, pg_catalog.age(p.transaction)::bigint AS xid_age,
       extract(epoch FROM pg_catalog.now() - p.prepared)::float8 AS age_s
  FROM pg_catalog.pg_prepared_xacts p
 ORDER BY p.prepared
"""

DEAD_TUPLES = """
SELECT s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       s.n_dead_tup::float8 / greatest(s.n_live_tup + s.n_dead_tup, 1) AS dead_ratio,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       count(*) OVER () AS tables,
       sum(s.n_dead_tup) OVER () AS total_dead,
       count(*) FILTER (WHERE s.n_dead_tup >= %(dead_tuples)s
                          AND s.n_dead_tup::float8 / greatest(s.n_live_tup + s.n_dead_tup, 1) >= %(dead_ratio)s
                          AND s.n_dead_tup > 0) OVER () AS over_threshold,
       count(*) FILTER (WHERE s.last_analyze IS NULL AND s.last_autoanalyze IS NULL AND s.n_live_tup > 0)
           OVER () AS never_analyzed
  FROM pg_catalog.pg_stat_user_tables s
 ORDER BY s.n_dead_tup DESC, s.schemaname, s.relname
 LIMIT %(top)s
"""

TABLE_BLOAT = """
WITH st AS MATERIALIZED (
    SELECT s.schemaname, s.tablename, s.attname, s.null_frac, s.avg_width
      FROM pg_catalog.pg_stats s
     WHERE NOT s.inherited
       AND s.schemaname <> ALL (ARRAY['pg_catalog', 'information_schema']) AND s.schemaname !~ '^pg_'
), att AS (
    SELECT tbl.oid, ns.nspname, tbl.relname, tbl.reltuples, tbl.relpages AS heappages,
           coalesce(toast.relpages, 0) AS toastpages, coalesce(toast.reltuples, 0) AS toasttuples,
           coalesce(substring(array_to_string(tbl.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::smallint, 100)
               AS fillfactor,
           23 + CASE WHEN max(coalesce(s.null_frac, 0)) > 0 THEN (7 + count(s.attname)) / 8 ELSE 0 END
               AS tpl_hdr_size,
           sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 0)) AS tpl_data_size,
           bool_or(att.atttypid = 'pg_catalog.name'::pg_catalog.regtype)
               OR sum(CASE WHEN att.attnum > 0 THEN 1 ELSE 0 END) <> count(s.attname) AS is_na
      FROM pg_catalog.pg_attribute att
      JOIN pg_catalog.pg_class tbl ON att.attrelid = tbl.oid
      JOIN pg_catalog.pg_namespace ns ON ns.oid = tbl.relnamespace
      LEFT JOIN st s ON s.schemaname = ns.nspname AND s.tablename = tbl.relname AND s.attname = att.attname
      LEFT JOIN pg_catalog.pg_class toast ON toast.oid = tbl.reltoastrelid
     WHERE NOT att.attisdropped AND att.attnum > 0 AND tbl.relkind IN ('r', 'm') AND tbl.relpages > 0
       AND ns.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']) AND ns.nspname !~ '^pg_'
     GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
), sized AS (
    SELECT att.*, %(bs)s::numeric AS bs,
           -- tuple size: item pointer + header + data, each rounded up to MAXALIGN (8)
           (4 + tpl_hdr_size + tpl_data_size + 16
              - CASE WHEN tpl_hdr_size %% 8 = 0 THEN 8 ELSE tpl_hdr_size %% 8 END
              - CASE WHEN ceil(tpl_data_size)::int %% 8 = 0 THEN 8 ELSE ceil(tpl_data_size)::int %% 8 END
           ) AS tpl_size
      FROM att
), est AS (
    SELECT sized.*, heappages + toastpages AS tblpages,
           ceil(reltuples / ((bs - 24) * fillfactor / (tpl_size * 100))) + ceil(toasttuples / 4) AS est_pages_ff
      FROM sized
     WHERE tpl_size > 0
)
SELECT nspname, relname, fillfactor, (tblpages * bs)::bigint AS real_bytes,
       greatest((tblpages - est_pages_ff) * bs, 0)::bigint AS bloat_bytes,
       CASE WHEN tblpages > 0 THEN greatest(100 * (tblpages - est_pages_ff) / tblpages, 0) ELSE 0 END::float8
           AS bloat_pct
  FROM est
 WHERE NOT is_na AND tblpages - est_pages_ff > 0
 ORDER BY bloat_bytes DESC, nspname, relname
 LIMIT %(top)s
"""

# MATERIALIZED steps keep the planner from nesting loops over pg_stats, whose row count it cannot
# estimate (12 s instead of 0.1 s on 1,000 tables).
INDEX_BLOAT = """
WITH cols AS MATERIALIZED (
    SELECT n.nspname, ct.relname AS tblname, ci.relname AS idxname, ci.reltuples, ci.relpages,
           coalesce(substring(array_to_string(ci.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::smallint, 90)
               AS fillfactor,
           coalesce(a1.attname, a2.attname) AS attname,
           coalesce(a1.atttypid, a2.atttypid) AS atttypid,
           CASE WHEN a1.attnum IS NULL THEN ci.relname ELSE ct.relname END AS attrelname
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
      JOIN pg_catalog.pg_class ct ON ct.oid = i.indrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = ct.relnamespace
      CROSS JOIN LATERAL unnest(string_to_array(i.indkey::text, ' ')::int2[]) WITH ORDINALITY AS k(attnum, pos)
      LEFT JOIN pg_catalog.pg_attribute a1 ON k.attnum <> 0 AND a1.attrelid = i.indrelid AND a1.attnum = k.attnum
      LEFT JOIN pg_catalog.pg_attribute a2 ON k.attnum = 0 AND a2.attrelid = i.indexrelid AND a2.attnum = k.pos
     WHERE ci.relam = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree') AND ci.relpages > 0
       AND i.indisvalid
       AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']) AND n.nspname !~ '^pg_'
), st AS MATERIALIZED (
    SELECT s.schemaname, s.tablename, s.attname, s.null_frac, s.avg_width
      FROM pg_catalog.pg_stats s
     WHERE s.schemaname <> ALL (ARRAY['pg_catalog', 'information_schema']) AND s.schemaname !~ '^pg_'
), stats AS (
    SELECT c.nspname, c.tblname, c.idxname, c.reltuples, c.relpages, c.fillfactor,
           CASE WHEN max(coalesce(s.null_frac, 0)) = 0 THEN 8 ELSE 8 + ((32 + 8 - 1) / 8) END AS hdr,
           sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024)) AS datawidth,
           bool_or(c.atttypid = 'pg_catalog.name'::pg_catalog.regtype) OR bool_or(s.attname IS NULL) AS is_na
      FROM cols c
      LEFT JOIN st s ON s.schemaname = c.nspname AND s.tablename = c.attrelname AND s.attname = c.attname
     GROUP BY 1, 2, 3, 4, 5, 6
), est AS (
    SELECT stats.*, %(bs)s::numeric AS bs,
           (hdr + 8 - CASE WHEN hdr %% 8 = 0 THEN 8 ELSE hdr %% 8 END
                + datawidth + 8 - CASE WHEN datawidth = 0 THEN 0
                                      WHEN datawidth::int %% 8 = 0 THEN 8 ELSE datawidth::int %% 8 END
           )::numeric AS tuple_width
      FROM stats
), pages AS (
    SELECT est.*,
           coalesce(1 + ceil(reltuples / floor((bs - 16 - 24) * fillfactor / (100 * (4 + tuple_width)::float8))), 0)
               AS est_pages_ff
      FROM est
     WHERE NOT is_na
)
SELECT nspname, tblname, idxname, (relpages * bs)::bigint AS real_bytes,
       greatest((relpages - est_pages_ff) * bs, 0)::bigint AS bloat_bytes,
       greatest(100 * (relpages - est_pages_ff)::float8 / relpages, 0) AS bloat_pct
  FROM pages
 WHERE relpages > est_pages_ff
 ORDER BY bloat_bytes DESC, nspname, idxname
 LIMIT %(top)s
"""

INDEXES = sql.SQL("""
WITH idx AS (
    SELECT i.indexrelid, i.indrelid, n.nspname, ct.relname AS table_name, ci.relname AS index_name,
           i.indisunique, i.indisprimary, i.indisvalid, i.indisready, i.indnkeyatts, i.indnatts,
           string_to_array(i.indkey::text, ' ')::int2[] AS keys,
           string_to_array(i.indclass::text, ' ')::oid[] AS classes,
           i.indcollation::text AS collations,
           coalesce(pg_catalog.pg_get_expr(i.indexprs, i.indrelid), '') AS exprs,
           coalesce(pg_catalog.pg_get_expr(i.indpred, i.indrelid), '') AS pred,
           ci.relam, am.amname, {index_size} AS size_bytes, ct.reltuples,
           -- IN (uncorrelated subquery): hashed once, not one scan of pg_constraint per index
           i.indexrelid IN (SELECT k.conindid FROM pg_catalog.pg_constraint k WHERE k.contype IN ('p', 'u', 'x'))
               AS backs_constraint,
           i.indrelid IN (SELECT p.relid FROM pg_catalog.pg_stat_progress_create_index p) AS being_built,
           coalesce(st.idx_scan, 0) AS idx_scan
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
      JOIN pg_catalog.pg_am am ON am.oid = ci.relam
      JOIN pg_catalog.pg_class ct ON ct.oid = i.indrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = ct.relnamespace
      LEFT JOIN pg_catalog.pg_stat_all_indexes st ON st.indexrelid = i.indexrelid
     WHERE n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']) AND n.nspname !~ '^pg_(toast|temp_)'
)
SELECT * FROM idx
""").format(index_size=_size("ci"))

FOREIGN_KEYS = """
SELECT k.conname, n.nspname, t.relname, rn.nspname AS ref_schema, r.relname AS ref_table, t.reltuples,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
              ORDER BY u.ord)::text[] AS columns
  FROM pg_catalog.pg_constraint k
  JOIN pg_catalog.pg_class t ON t.oid = k.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_catalog.pg_class r ON r.oid = k.confrelid
  JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
 WHERE k.contype = 'f' AND k.conparentid = 0
   AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']) AND n.nspname !~ '^pg_'
   AND NOT EXISTS (
       SELECT 1 FROM pg_catalog.pg_index i
        WHERE i.indrelid = k.conrelid AND i.indisvalid AND i.indpred IS NULL
          AND i.indnkeyatts >= pg_catalog.cardinality(k.conkey)
          AND (string_to_array(i.indkey::text, ' ')::int2[])[1:pg_catalog.cardinality(k.conkey)] @> k.conkey
          AND (string_to_array(i.indkey::text, ' ')::int2[])[1:pg_catalog.cardinality(k.conkey)] <@ k.conkey)
 ORDER BY n.nspname, t.relname, k.conname
"""

# The owning column's type bounds a sequence too: a bigint sequence feeding an integer column (the
# classic `serial` trap) overflows at 2^31 - 1.
SEQUENCES = """
SELECT s.schemaname, s.sequencename, s.data_type::text AS data_type, s.last_value, s.increment_by, s.cycle,
       s.max_value, s.min_value, col.typname AS column_type,
       CASE WHEN s.increment_by > 0 THEN
                least(s.max_value, CASE col.typname WHEN 'int2' THEN 32767 WHEN 'int4' THEN 2147483647
                                                    ELSE s.max_value END)
            ELSE greatest(s.min_value, CASE col.typname WHEN 'int2' THEN -32768 WHEN 'int4' THEN -2147483648
                                                        ELSE s.min_value END) END AS limit_value,
       col.table_name, col.column_name
  FROM pg_catalog.pg_sequences s
  JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
  JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
  LEFT JOIN LATERAL (
      SELECT ty.typname, tc.relname AS table_name, a.attname AS column_name
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid
        JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
       WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
         AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjsubid > 0
         AND d.deptype IN ('a', 'i')
       LIMIT 1) col ON true
 WHERE s.last_value IS NOT NULL AND NOT s.cycle
"""

EXPECTED_INDEXES = """
SELECT n.nspname, t.relname, ci.relname AS index_name, i.indisvalid, i.indpred IS NOT NULL AS partial,
       ARRAY(SELECT a.attname FROM unnest((string_to_array(i.indkey::text, ' ')::int2[])[1:i.indnkeyatts])
                                   WITH ORDINALITY AS u(attnum, ord)
               LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum
              ORDER BY u.ord)::text[] AS columns
  FROM pg_catalog.pg_class t
  JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
  LEFT JOIN pg_catalog.pg_index i ON i.indrelid = t.oid
  LEFT JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
 WHERE (n.nspname, t.relname) IN (SELECT * FROM unnest(%(schemas)s::text[], %(tables)s::text[]))
"""

CACHE = """
SELECT d.blks_hit, d.blks_read,
       (SELECT coalesce(sum(heap_blks_hit), 0) FROM pg_catalog.pg_statio_user_tables) AS heap_hit,
       (SELECT coalesce(sum(heap_blks_read), 0) FROM pg_catalog.pg_statio_user_tables) AS heap_read,
       (SELECT coalesce(sum(idx_blks_hit), 0) FROM pg_catalog.pg_statio_user_tables) AS idx_hit,
       (SELECT coalesce(sum(idx_blks_read), 0) FROM pg_catalog.pg_statio_user_tables) AS idx_read
  FROM pg_catalog.pg_stat_database d
 WHERE d.datname = pg_catalog.current_database()
"""

TABLE_SIZES = sql.SQL("""
WITH sized AS (
    SELECT n.nspname, c.relname, c.reltuples::bigint AS rows_estimate,
           {table_size} AS table_bytes,
           coalesce(CASE WHEN t.oid IS NULL THEN 0 ELSE {toast_size} END, 0)::bigint AS toast_bytes,
           coalesce((SELECT sum({index_size}) FROM pg_catalog.pg_index i
                       JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
                      WHERE i.indrelid = c.oid), 0)::bigint AS index_bytes
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
     WHERE c.relkind IN ('r', 'm')
       AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']) AND n.nspname !~ '^pg_'
)
SELECT *, count(*) OVER () AS tables FROM sized
 ORDER BY table_bytes + toast_bytes DESC, nspname, relname
 LIMIT %(top)s
""").format(table_size=_size("c"), toast_size=_size("t"), index_size=_size("ci"))

DATABASE_SIZE = "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())::bigint"
