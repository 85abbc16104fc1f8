-- Removes what 0008_throughput.up.sql added.
DROP TABLE sluice.throughput;
