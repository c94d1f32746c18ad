-- RVM Fleet schema, version 2: the notification outbox keeps what the receiver answered to
-- the delivery that succeeded (fleet-server/src/notify/outbox: `OutboxEntry::receipt`, shown
-- by the API beside the entry's state).
ALTER TABLE notification_outbox ADD COLUMN receipt text;
