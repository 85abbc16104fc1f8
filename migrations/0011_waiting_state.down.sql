-- PostgreSQL cannot remove a value from an enum: 'waiting' stays in
-- sluice.task_state, unused once 0012 is reverted (which made every waiting
-- task available). Applying 0011 again is a no-op (ADD VALUE IF NOT EXISTS).
SELECT 1;
