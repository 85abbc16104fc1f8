-- Tasks name their event's transaction id beside its id, so that reading a
-- task's event can go straight to it once sluice.events is partitioned by
-- transaction id (docs/DESIGN.md, "What is planned": a lookup by id alone
-- would visit every partition).
ALTER TABLE sluice.tasks ADD COLUMN event_txid xid8;
UPDATE sluice.tasks t SET event_txid = e.txid FROM sluice.events e WHERE e.id = t.event_id;

-- An insert that does not name it (sluice.refill of migration 1, a task
-- written by hand) gets it from the event. The WHEN clause is checked before
-- any function call, so the claim, which names it, pays nothing.
CREATE FUNCTION sluice.task_event_txid() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT e.txid INTO NEW.event_txid FROM sluice.events e WHERE e.id = NEW.event_id;
    RETURN NEW;
END;
$$;

CREATE TRIGGER tasks_event_txid BEFORE INSERT ON sluice.tasks
    FOR EACH ROW WHEN (NEW.event_txid IS NULL) EXECUTE FUNCTION sluice.task_event_txid();
