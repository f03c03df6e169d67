-- Migration 5 (issue #10): sharing between servers. Peers added through the API (those in the
-- TOML live in the configuration), the outbox (one row per instance and destination, written in
-- the instance's own commit), the signed manifests and receipts of each delivered study, the
-- keys of other facilities as first seen, and what this server received from peers.
-- Times are RFC 3339 UTC text with milliseconds, as in migration 3.

CREATE TABLE peers (
    name              TEXT PRIMARY KEY,
    -- 'dicomweb' (any PS3.18 origin server), 'tramy' (DICOMweb plus signed receipts), 'dimse'
    kind              TEXT NOT NULL CHECK (kind IN ('dicomweb', 'tramy', 'dimse')),
    dicomweb_url      TEXT,
    dimse_ae_title    TEXT,
    dimse_host        TEXT,
    dimse_port        INTEGER,
    token_file        TEXT,
    facility          TEXT NOT NULL,
    max_bytes_per_sec INTEGER,
    windows           TEXT NOT NULL DEFAULT '',    -- e.g. '22:00-06:00,12:00-13:00', local time
    created_by        TEXT NOT NULL,
    created_at        TEXT NOT NULL
);

-- One instance on its way to one peer. `state`: queued → sent → stored → verified, or failed
-- (retried after not_before) and dead (given up; retried by hand). Urgent AI flags raise
-- `priority`; the sender takes the highest priority first, oldest first.
CREATE TABLE outbox (
    id                 INTEGER PRIMARY KEY,
    peer               TEXT NOT NULL,
    sop_instance_uid   TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    facility           TEXT NOT NULL,                  -- the instance's facility (for counts)
    size_bytes         INTEGER NOT NULL,
    sha256             TEXT NOT NULL,
    priority           INTEGER NOT NULL DEFAULT 0,
    state              TEXT NOT NULL DEFAULT 'queued'
                       CHECK (state IN ('queued', 'sent', 'stored', 'verified', 'failed', 'dead')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    not_before         TEXT NOT NULL,
    last_error         TEXT NOT NULL DEFAULT '',
    queued_at          TEXT NOT NULL,
    sent_at            TEXT,
    stored_at          TEXT,
    verified_at        TEXT,
    delivery_id        TEXT,                           -- the manifest that covered it
    UNIQUE (peer, sop_instance_uid)
);
CREATE INDEX outbox_due ON outbox(peer, state, priority DESC, id);
CREATE INDEX outbox_study ON outbox(study_instance_uid, peer);
CREATE INDEX outbox_queued_at ON outbox(queued_at);

-- A signed manifest sent for a study to a peer, and the peer's answer.
CREATE TABLE deliveries (
    id                 TEXT PRIMARY KEY,
    peer               TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    facility           TEXT NOT NULL,
    manifest_jws       TEXT NOT NULL,
    manifest_sha256    TEXT NOT NULL,
    instances          INTEGER NOT NULL,
    -- 'sent' (waiting for the receipt), 'verified' (every instance confirmed), 'partial' (some
    -- failed), 'stored' (a plain DICOMweb or DIMSE peer confirmed storage without a signature),
    -- 'rejected' (the peer refused the manifest), 'invalid_receipt' (a receipt that does not
    -- verify: never accepted)
    state              TEXT NOT NULL,
    receipt_jws        TEXT,
    detail             TEXT NOT NULL DEFAULT '',
    created_at         TEXT NOT NULL,
    answered_at        TEXT
);
CREATE INDEX deliveries_study ON deliveries(study_instance_uid, peer);

-- Other facilities' public keys, pinned when first seen (a manifest's or receipt's `jwk`
-- header) or from their key endpoint; a later different key for the same kid is refused.
CREATE TABLE remote_keys (
    facility   TEXT NOT NULL,
    kid        TEXT NOT NULL,
    jwk        TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (facility, kid)
);

-- Manifests this server received and the receipts it signed.
CREATE TABLE received_deliveries (
    id                 TEXT PRIMARY KEY,                -- the manifest's id
    sender_facility    TEXT NOT NULL,
    destination        TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    manifest_sha256    TEXT NOT NULL,
    stored             INTEGER NOT NULL,
    failed             INTEGER NOT NULL,
    receipt_jws        TEXT NOT NULL,
    received_by        TEXT NOT NULL,
    received_at        TEXT NOT NULL
);
CREATE INDEX received_deliveries_sender ON received_deliveries(sender_facility, received_at);
