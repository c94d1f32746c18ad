-- RVM Fleet schema, version 6: several fleet-server instances on one database (issue 21,
-- item 5). The unique open-alert index `alerts_one_open` (0001) decides which instance's
-- alert of a (rule, device) is the open one; `opened_by` records whose insert won, so an
-- instance that finds an open row with its own alert id knows whether it wrote it (it
-- notifies) or another instance made the same id (it adopts the row and notifies nothing).
-- NULL for alerts written before this version and by the single-instance migration.
ALTER TABLE alerts ADD COLUMN opened_by text;
