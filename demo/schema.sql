-- The demo database: a schema modelled on the seed apps, small enough to load in a second.
--
--  * A Prisma app (GCBB AI companions): "Category", "Companion", "Message" with quoted mixed-case
--    columns, and the dashboard's materialized view mv_dashboard_companions (+ one built on it).
--  * A Fly/Neon app (VTChat): users, user_subscriptions and user_subscription_summary.
--
-- It ends with a migration applied AFTER the views were created, exactly the seeds' situation:
-- "Companion".description exists, mv_dashboard_companions does not have it, and the app's query
-- fails with `column "description" does not exist` until the view is repaired. The view's
-- definition file (plan/views/mv_dashboard_companions.sql) already has the column: pgkeeper's
-- refresh sees the drift and recreates the view (and mv_category_stats, built on it).
--
-- Other jobs' sections append their tables below the marked line at the end.

-- ---------------------------------------------------------------- Prisma app: companions
CREATE TABLE "Category" (
    id   text PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE "Companion" (
    id             text PRIMARY KEY,
    "userId"       text NOT NULL,
    "userName"     text NOT NULL,
    src            text NOT NULL,
    name           text NOT NULL,
    "categoryId"   text NOT NULL REFERENCES "Category"(id),
    private        boolean NOT NULL DEFAULT false,
    global         boolean NOT NULL DEFAULT false,
    "isFree"       boolean NOT NULL DEFAULT true,
    "tokensBurned" integer NOT NULL DEFAULT 0,
    views          integer NOT NULL DEFAULT 0,
    votes          integer NOT NULL DEFAULT 0,
    "createdAt"    timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"    timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "Companion_categoryId_private_idx" ON "Companion"("categoryId", private);
CREATE INDEX "Companion_private_userId_createdAt_idx" ON "Companion"(private, "userId", "createdAt");

CREATE TABLE "Message" (
    id            text PRIMARY KEY,
    role          text NOT NULL,
    content       text NOT NULL,
    "companionId" text NOT NULL REFERENCES "Companion"(id) ON DELETE CASCADE,
    "userId"      text NOT NULL,
    "createdAt"   timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "Message_companionId_createdAt_idx" ON "Message"("companionId", "createdAt");
CREATE INDEX "Message_companionId_userId_idx" ON "Message"("companionId", "userId");

INSERT INTO "Category" (id, name)
SELECT 'cat_' || g, (ARRAY['Famous People', 'Movies & TV', 'Musicians', 'Games', 'Animals', 'Philosophy'])[g]
FROM generate_series(1, 6) g;

INSERT INTO "Companion" (id, "userId", "userName", src, name, "categoryId", private, global, "isFree",
                         "tokensBurned", views, votes, "createdAt", "updatedAt")
SELECT 'cmp_' || lpad(g::text, 4, '0'),
       CASE WHEN g % 5 = 0 THEN 'system' ELSE 'user_' || (g % 40) END,
       CASE WHEN g % 5 = 0 THEN 'GCBB' ELSE 'creator' || (g % 40) END,
       'https://images.example.com/companions/' || g || '.png',
       'Companion ' || g,
       'cat_' || (1 + g % 6),
       g % 7 = 0,
       g % 11 = 0,
       g % 3 <> 0,
       (g * 7919) % 50000,
       (g * 104729) % 9000,
       (g * 31) % 500,
       timestamp '2025-01-01' + g * interval '3 hours',
       timestamp '2025-01-01' + g * interval '3 hours'
FROM generate_series(1, 240) g;

INSERT INTO "Message" (id, role, content, "companionId", "userId", "createdAt")
SELECT 'msg_' || lpad(g::text, 5, '0'),
       CASE WHEN g % 2 = 0 THEN 'user' ELSE 'system' END,
       'message ' || g,
       'cmp_' || lpad((1 + (g * 37) % 240)::text, 4, '0'),
       'user_' || (g % 90),
       timestamp '2025-02-01' + g * interval '17 minutes'
FROM generate_series(1, 2400) g;

-- The dashboard view as the app first created it (the seeds' definition, before `description`).
CREATE MATERIALIZED VIEW "mv_dashboard_companions" AS
SELECT
  c.id,
  c.name,
  c.src,
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
GROUP BY c.id, c.name, c.src, c."categoryId", c."userId", c.private, c."userName",
         c."tokensBurned", c."createdAt", c."isFree", c.global, c.views, c.votes
ORDER BY c."createdAt" DESC;
CREATE UNIQUE INDEX "mv_dashboard_companions_id_key" ON "mv_dashboard_companions" (id);

-- Built on the dashboard view: refreshed after it, and recreated with it when it is repaired.
CREATE MATERIALIZED VIEW mv_category_stats AS
SELECT cat.id AS "categoryId",
       cat.name,
       count(d.id) AS companions,
       coalesce(sum(d.message_count), 0)::bigint AS messages
FROM "Category" cat
LEFT JOIN "mv_dashboard_companions" d ON d."categoryId" = cat.id
GROUP BY cat.id, cat.name;
CREATE UNIQUE INDEX mv_category_stats_key ON mv_category_stats ("categoryId");

-- No unique key: always a plain (blocking) refresh; it is tiny, the plan says so explicitly.
CREATE MATERIALIZED VIEW mv_daily_messages AS
SELECT date_trunc('day', m."createdAt")::date AS day,
       count(*) AS messages,
       count(DISTINCT m."companionId") AS companions
FROM "Message" m
GROUP BY 1;

-- ---------------------------------------------------------------- Fly/Neon app: subscriptions
CREATE TABLE users (
    id         text PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_subscriptions (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id            text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan               text NOT NULL,
    status             text NOT NULL CHECK (status IN ('active', 'canceled', 'past_due')),
    current_period_end timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_subscriptions_user_id_created_at_idx ON user_subscriptions (user_id, created_at DESC);

INSERT INTO users (id, email, name, created_at)
SELECT 'usr_' || g, 'user' || g || '@example.com', 'User ' || g, timestamptz '2024-06-01' + g * interval '5 hours'
FROM generate_series(1, 400) g;

INSERT INTO user_subscriptions (user_id, plan, status, current_period_end, created_at)
SELECT 'usr_' || (1 + (g * 7) % 400),
       (ARRAY['vt_plus', 'vt_base', 'vt_plus', 'vt_pro'])[1 + g % 4],
       (ARRAY['active', 'active', 'canceled', 'past_due', 'active'])[1 + g % 5],
       now() + ((g % 60) - 20) * interval '1 day',
       timestamptz '2024-07-01' + g * interval '9 hours'
FROM generate_series(1, 520) g;

-- One row per user with their newest subscription: "10x faster subscription checks" (seed 002).
CREATE MATERIALIZED VIEW user_subscription_summary AS
SELECT u.id AS user_id,
       u.email,
       coalesce(s.plan, 'free') AS plan,
       s.status,
       s.current_period_end,
       coalesce(s.status = 'active' AND s.current_period_end > now(), false) AS is_active
FROM users u
LEFT JOIN LATERAL (
    SELECT plan, status, current_period_end
    FROM user_subscriptions us
    WHERE us.user_id = u.id
    ORDER BY us.created_at DESC
    LIMIT 1
) s ON true;
CREATE UNIQUE INDEX user_subscription_summary_user_id_key ON user_subscription_summary (user_id);

-- ---------------------------------------------------------------- migration 20250311_add_description
-- Applied by `prisma migrate deploy` after the views above existed. Nobody recreated the view, so
-- `SELECT description FROM mv_dashboard_companions` fails: the seeds' `column "description" does not exist`.
ALTER TABLE "Companion" ADD COLUMN description text;
UPDATE "Companion" SET description = 'A friendly companion who talks about ' || lower(name);

-- ---------------------------------------------------------------- other jobs' demo tables go below

-- ---------------------------------------------------------------- vacuum: group chats (seed 001)
-- A busy table pair the vacuum demo churns. Seed 001 lists the indexes the app relies on; one of
-- them, ("groupChatId", "isBot"), was never created here: the health report's expected indexes
-- (plan: vacuum.expected_indexes) catch it. GroupMessage.senderId references users without an index.
CREATE TABLE "GroupChat" (
    id          text PRIMARY KEY,
    "creatorId" text NOT NULL,
    name        text NOT NULL,
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "GroupChat_creatorId_createdAt_idx" ON "GroupChat"("creatorId", "createdAt");

CREATE TABLE "GroupMessage" (
    id            text PRIMARY KEY,
    "groupChatId" text NOT NULL REFERENCES "GroupChat"(id) ON DELETE CASCADE,
    "senderId"    text NOT NULL REFERENCES users(id),
    "isBot"       boolean NOT NULL DEFAULT false,
    content       text NOT NULL,
    "createdAt"   timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "GroupMessage_groupChatId_createdAt_idx" ON "GroupMessage"("groupChatId", "createdAt");
CREATE INDEX "GroupMessage_groupChatId_senderId_createdAt_idx"
    ON "GroupMessage"("groupChatId", "senderId", "createdAt");

INSERT INTO "GroupChat" (id, "creatorId", name, "createdAt")
SELECT 'grp_' || g, 'usr_' || (1 + g % 400), 'Group ' || g, timestamp '2025-03-01' + g * interval '1 day'
FROM generate_series(1, 60) g;

INSERT INTO "GroupMessage" (id, "groupChatId", "senderId", "isBot", content, "createdAt")
SELECT 'gm_' || lpad(g::text, 5, '0'), 'grp_' || (1 + g % 60), 'usr_' || (1 + (g * 13) % 400), g % 3 = 0,
       'group message ' || g, timestamp '2025-03-01' + g * interval '7 minutes'
FROM generate_series(1, 6000) g;

-- ---------------------------------------------------------------- cleanup: sessions and tokens
-- VTChat's sessions (seed 002: hourly `cleanup_expired_sessions()`) and Matcha Time's tokens (seed
-- 004: `cleanup_all_expired_tokens()`), each seeded with expired, used and live rows. The example
-- plan cleans sessions and the reset / verification tokens with pgkeeper's batched deletes, and
-- refresh tokens through the app's own DB-side function (it returns a count, like the seeds').
CREATE TABLE sessions (
    id         text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token      text NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_sessions_token_hash ON sessions USING hash (token);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE password_reset_tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX password_reset_tokens_expires_at_idx ON password_reset_tokens (expires_at);

CREATE TABLE email_verification_tokens (LIKE password_reset_tokens INCLUDING ALL);

CREATE TABLE refresh_tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL
);
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);

-- Sessions: 6000, about a third expired (up to 30 days ago), the rest live for up to 30 days.
INSERT INTO sessions (id, user_id, token, expires_at, created_at)
SELECT 'ses_' || g, 'usr_' || (1 + g % 400), md5('session' || g),
       now() + CASE WHEN g % 3 = 0 THEN -1 ELSE 1 END * ((g * 7919) % 43200 + 1) * interval '1 minute',
       now() - ((g * 104729) % 43200) * interval '1 minute'
FROM generate_series(1, 6000) g;

-- Tokens: 1000 of each kind; a quarter expired, a tenth used (and so done with) but not yet expired.
INSERT INTO password_reset_tokens (user_id, token_hash, expires_at, used_at)
SELECT 'usr_' || (1 + g % 400), md5('reset' || g),
       now() + CASE WHEN g % 4 = 0 THEN interval '-2 hours' ELSE interval '1 hour' END,
       CASE WHEN g % 10 = 1 THEN now() - interval '5 minutes' END
FROM generate_series(1, 1000) g;

INSERT INTO email_verification_tokens (user_id, token_hash, expires_at, used_at)
SELECT 'usr_' || (1 + g % 400), md5('verify' || g),
       now() + CASE WHEN g % 4 = 0 THEN interval '-1 day' ELSE interval '2 days' END,
       CASE WHEN g % 10 = 1 THEN now() - interval '1 hour' END
FROM generate_series(1, 1000) g;

INSERT INTO refresh_tokens (user_id, token_hash, expires_at)
SELECT 'usr_' || (1 + g % 400), md5('refresh' || g),
       now() + CASE WHEN g % 4 = 0 THEN interval '-3 days' ELSE interval '20 days' END
FROM generate_series(1, 1000) g;

-- Seed 004's per-type function: deletes and returns how many rows it removed.
CREATE FUNCTION cleanup_expired_refresh_tokens() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE deleted bigint;
BEGIN
    DELETE FROM refresh_tokens WHERE expires_at < now();
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
