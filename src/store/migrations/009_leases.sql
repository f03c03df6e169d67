-- Migration 9 (issue #11): several nodes on one index. A triage job is claimed by one node
-- (`claimed_by`) until `lease_until` (RFC 3339): a job whose worker died is claimed again once
-- its lease has run out. A peer's outbox is sent by one node at a time, the holder of the
-- peer's lease; another takes over when it runs out.
ALTER TABLE triage_jobs ADD COLUMN claimed_by TEXT;
ALTER TABLE triage_jobs ADD COLUMN lease_until TEXT;
CREATE TABLE peer_leases (
    peer        TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    lease_until TEXT NOT NULL
);
-- Start-up asks whether the objects this node was writing when it stopped are indexed
-- (its journal of writes in flight), instead of listing the whole object store.
CREATE INDEX instances_object_key ON instances(object_key);
