-- The dashboard's companion list (seed 000), as the app needs it today: with `description`,
-- added to "Companion" by migration 20250311_add_description.
--
-- This file is the view's source of truth for pgkeeper. When the stored view differs from it
-- (compared as Postgres parses both, so formatting does not matter) or is missing, the refresh
-- job recreates the view from this file, with the indexes below, in one transaction.
-- Allowed here: one CREATE MATERIALIZED VIEW, CREATE [UNIQUE] INDEX ... ON it, and an optional
-- DROP MATERIALIZED VIEW IF EXISTS of it (ignored: pgkeeper drops views itself, safely).
-- Unqualified names resolve in the view's schema, then in public.

CREATE MATERIALIZED VIEW "mv_dashboard_companions" AS
SELECT
  c.id,
  c.name,
  c.src,
  c.description,
  c."categoryId",
  c."userId",
  c.private,
  c."userName",
  c."tokensBurned",
  c."createdAt",
  c."isFree",
  c.global,
  c.views,
  c.votes,
  COUNT(m.id) AS message_count
FROM "Companion" c
LEFT JOIN "Message" m ON c.id = m."companionId"
WHERE c.private = false OR c."userId" = 'system'
GROUP BY c.id, c.name, c.src, c.description, c."categoryId", c."userId", c.private, c."userName",
         c."tokensBurned", c."createdAt", c."isFree", c.global, c.views, c.votes
ORDER BY c."createdAt" DESC;

-- A unique index on plain columns (no expression, no WHERE) lets pgkeeper refresh the view
-- CONCURRENTLY: readers keep reading the old rows while the new ones are computed.
CREATE UNIQUE INDEX "mv_dashboard_companions_id_key" ON "mv_dashboard_companions" (id);
