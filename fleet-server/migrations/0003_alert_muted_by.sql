-- RVM Fleet schema, version 3: an alert remembers the maintenance window that muted its
-- notifications (fleet-server/src/alerts/alert.rs: `Alert::muted_by`), so a restart neither
-- sends what the window held back nor forgets to send the firing when the window closes; and
-- fleet_alerts shows it (a column added at the end: queries of the view keep working).
ALTER TABLE alerts ADD COLUMN muted_by text;

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
       a.muted_by
FROM alerts a
LEFT JOIN devices d ON d.device = a.subject;
