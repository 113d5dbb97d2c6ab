-- Room on each page for the new version of a customer's row, so an update that changes no indexed
-- column (attribute values — since 007 — and opt-out) is a HOT update: no new entry in any of the
-- table's ten indexes. Pages written from now on; VACUUM FULL (or pg_repack) applies it to the rest.
ALTER TABLE customers SET (fillfactor = 70);
