-- Which silence window a run satisfied (refresh, cleanup, vacuum, analyze, backup; NULL: none, e.g.
-- a dry run or a failure): what `pgkeeper status` and the dead-man's-switch alarms go by.
ALTER TABLE pgkeeper.runs ADD COLUMN IF NOT EXISTS alarm_window text;
