-- Completes the tasks (consumer $1, event $2[i]) still held under lease
-- token $3[i]; returns the event ids completed (a missing one lost its
-- lease). The statement and why it reads as it does: sluice.ack_v1, in
-- migrations/functions/ack_v1.sql.
SELECT * FROM sluice.ack_v1($1, $2, $3)
