-- A task state for FIFO per key (migration 0012): a task whose key has an
-- earlier task still pending waits for it, in this state, and is neither
-- claimed nor scheduled until it is its key's turn. In a migration of its
-- own: a value added to an enum cannot be used in the transaction that added it.
ALTER TYPE sluice.task_state ADD VALUE IF NOT EXISTS 'waiting';
