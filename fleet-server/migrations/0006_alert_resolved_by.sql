-- RVM Fleet schema, version 6: an alert a person resolved by hand (`POST
-- /api/v1/alerts/{id}/resolve`, fleet-server/src/alerts/alert.rs: `Alert::resolved_by`)
-- keeps who did it and why, so its history says so after a restart and Grafana can show it;
-- fleet_alerts gets both at the end (queries of the view keep working). NULL for alerts
-- whose samples resolved them.
ALTER TABLE alerts ADD COLUMN resolved_by text;
ALTER TABLE alerts ADD COLUMN resolve_comment text;

CREATE OR REPLACE VIEW fleet_alerts AS
SELECT a.id,
       a.rule,
       a.subject AS device,
       coalesce(a.labels ->> 'site', d.site) AS site,
       a.severity,
       a.state,
       a.metric,
       a.value,
       a.threshold,
       a.summary,
       a.labels,
       a.started_at,
       a.fired_at,
       a.resolved_at,
       a.escalated_at,
       a.ack_by,
       a.ack_at,
       a.ack_comment,
       a.silenced_by IS NOT NULL AS silenced,
       a.muted_by,
       a.resolved_by,
       a.resolve_comment
FROM alerts a
LEFT JOIN devices d ON d.device = a.subject;
