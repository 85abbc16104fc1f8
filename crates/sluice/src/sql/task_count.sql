-- How many tasks the filter selects (task_filter.sql), by state.
SELECT state::text AS state, count(*) AS tasks FROM matching GROUP BY state
