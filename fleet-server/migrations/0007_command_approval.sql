-- RVM Fleet schema, version 7: approvals and dry runs of commands
-- (fleet-server/src/commands/book.rs). A disruptive action waits in 'awaiting_approval'
-- (unsigned: signed_payload and signature are empty until a second operator approves it);
-- approved_by and approved_at say who and when; dry_run marks a command the agent only
-- validates and answers.
ALTER TABLE commands DROP CONSTRAINT IF EXISTS commands_state_check;
ALTER TABLE commands ADD CONSTRAINT commands_state_check CHECK (state IN ('awaiting_approval',
    'queued', 'sent', 'accepted', 'running', 'succeeded', 'failed', 'rejected', 'expired',
    'timed_out'));
ALTER TABLE commands ADD COLUMN dry_run boolean NOT NULL DEFAULT false;
ALTER TABLE commands ADD COLUMN approved_by text;
ALTER TABLE commands ADD COLUMN approved_at timestamptz;
