-- One row per user with their newest subscription (seed 002's refresh_subscription_summary()).

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
