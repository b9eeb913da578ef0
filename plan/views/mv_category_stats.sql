-- Companions and messages per category, built on mv_dashboard_companions: refreshed after it,
-- and recreated together with it whenever that view is repaired (which is why it needs a
-- definition file: pgkeeper never drops a view it cannot recreate).

CREATE MATERIALIZED VIEW mv_category_stats AS
SELECT cat.id AS "categoryId",
       cat.name,
       count(d.id) AS companions,
       coalesce(sum(d.message_count), 0)::bigint AS messages
FROM "Category" cat
LEFT JOIN "mv_dashboard_companions" d ON d."categoryId" = cat.id
GROUP BY cat.id, cat.name;

CREATE UNIQUE INDEX mv_category_stats_key ON mv_category_stats ("categoryId");
