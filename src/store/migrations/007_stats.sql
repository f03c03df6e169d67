-- Migration 7 (issue #10 item 4): what a facility's delivery counts read by day. Indexes only:
-- its instances by arrival, its outbox rows by the day each step happened (the state counts
-- read the rows by `queued_at`), and flagged findings by day.
CREATE INDEX instances_facility_received ON instances(facility, received_at);
CREATE INDEX outbox_facility_queued ON outbox(facility, queued_at);
CREATE INDEX outbox_facility_sent ON outbox(facility, sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX outbox_facility_stored ON outbox(facility, stored_at) WHERE stored_at IS NOT NULL;
CREATE INDEX outbox_facility_verified ON outbox(facility, verified_at) WHERE verified_at IS NOT NULL;
CREATE INDEX outbox_peer_sent ON outbox(peer, id) WHERE state IN ('sent', 'stored', 'verified');
CREATE INDEX findings_flagged_created ON findings(created_at) WHERE flagged = 1;
CREATE INDEX received_deliveries_destination ON received_deliveries(destination, received_at);
