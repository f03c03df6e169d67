-- Migration 7 (issue #10 item 4): what a facility's delivery counts read by day. Indexes only,
-- each covering its query (the counts are grouped from the index alone): the facility's
-- instances by arrival, its outbox rows by the day each step happened and, for the state
-- counts, by the day they were queued; flagged findings by day; deliveries received by day.
CREATE INDEX instances_facility_received ON instances(facility, received_at, source, series_fk);
CREATE INDEX outbox_facility_queued ON outbox(facility, queued_at, peer, state, study_instance_uid);
CREATE INDEX outbox_facility_sent ON outbox(facility, sent_at, peer, study_instance_uid)
    WHERE sent_at IS NOT NULL;
CREATE INDEX outbox_facility_stored ON outbox(facility, stored_at, peer, study_instance_uid)
    WHERE stored_at IS NOT NULL;
CREATE INDEX outbox_facility_verified ON outbox(facility, verified_at, peer, study_instance_uid)
    WHERE verified_at IS NOT NULL;
CREATE INDEX findings_flagged_created ON findings(created_at) WHERE flagged = 1;
CREATE INDEX received_deliveries_destination ON received_deliveries(destination, received_at);
-- `tramy reconcile` reads what a peer accepted or confirmed, page by page in id order.
CREATE INDEX outbox_peer_sent ON outbox(peer, id) WHERE state IN ('sent', 'stored', 'verified');
