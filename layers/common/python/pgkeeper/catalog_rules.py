"""Rules about the catalog that the vacuum job and the health report share.

One text each, so a table's freeze age or an interrupted REINDEX is judged alike by the job that
acts on it and by the report that warns about it; neither owns the rule.
"""

from __future__ import annotations

from psycopg import sql

# The effective autovacuum_(multixact_)freeze_max_age of table `c` and its toast table `t`, in a query whose
# `cfg` has the global settings (fmax, mmax): a reloption, on the table or as toast.* on its toast table,
# only lowers the global setting (the server ignores a larger one); least() skips an unset option's NULL.
# One text for the selection and the health report, so both judge a table's freeze age alike.
FREEZE_MAX_AGES = sql.SQL("""
      LEFT JOIN LATERAL (
          SELECT least(cfg.fmax, min(CASE WHEN option_name = 'autovacuum_freeze_max_age'
                                          THEN option_value::bigint END)) AS freeze_max_age,
                 least(cfg.mmax, min(CASE WHEN option_name = 'autovacuum_multixact_freeze_max_age'
                                          THEN option_value::bigint END)) AS mxid_freeze_max_age
            FROM pg_catalog.pg_options_to_table(pg_catalog.array_cat(c.reloptions, t.reloptions))) fm ON true""")


def reindex_leftover(index_name: str) -> bool:
    """`x_ccnew`, `x_ccold1`, ...: what an interrupted REINDEX CONCURRENTLY leaves behind."""
    return index_name.rstrip("0123456789").endswith(("_ccnew", "_ccold"))
