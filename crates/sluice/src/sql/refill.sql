-- Materializes the next chunk (at most $2 events) of consumer $1's window;
-- see sluice.refill in the migrations.
SELECT materialized, more, busy FROM sluice.refill($1, $2)
