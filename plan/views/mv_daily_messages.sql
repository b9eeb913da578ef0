-- Messages per day. No unique index on purpose: the plan sets `concurrently: false` for it.

CREATE MATERIALIZED VIEW mv_daily_messages AS
SELECT date_trunc('day', m."createdAt")::date AS day,
       count(*) AS messages,
       count(DISTINCT m."companionId") AS companions
FROM "Message" m
GROUP BY 1;
