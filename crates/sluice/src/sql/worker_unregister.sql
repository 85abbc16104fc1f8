DELETE FROM sluice.workers WHERE id = $1
