"""Tests of the boundary modules at the top level: Kafka clients, embedded servers, migrations."""
