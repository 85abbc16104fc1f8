-- Removes what 0010_gateway_clients.up.sql added.
DROP TABLE sluice.gateway_clients;
