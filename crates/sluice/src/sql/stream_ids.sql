-- Every stream's id: a watcher of the whole queue listens on each stream's
-- channel, `sluice.<id>`.
SELECT id FROM sluice.streams ORDER BY id
