-- Stream $1's id, by name.
SELECT id FROM sluice.streams WHERE name = $1
