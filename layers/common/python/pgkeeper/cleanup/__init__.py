"""Deleting expired rows fast, in short transactions, and never a row the plan did not ask for.

- `predicate`: a target's structured condition as SQL (identifiers and parameters only).
- `resolve`: a target checked against the live catalog (table, columns, types, privileges).
- `walkers`: how a table is cut into batches: TID block ranges (PG >= 14) or primary-key ranges.
- `sizing`: how many blocks/rows the next transaction covers, from the last one's duration.
- `batches`: one batch's DELETE (or count), with lock_timeout retries and skipped locked rows.
- `estimate`: block-sampled counts for the safety rail and "remaining".
- `tables`, `functions`: one target, start to report.
"""
