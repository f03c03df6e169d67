-- Migration 11 (issue #13), PostgreSQL twin: each finding's standing against its model's intended use
-- (`inside`, `outside`: scored but never flagged, `undeclared`: the model declares no population,
-- as for every finding recorded before), why (or what was unknown, e.g. `age unknown`), and the
-- instance's View Position (0018,5101). Skipped jobs need no column: state `skipped`, the
-- reason in last_error.
ALTER TABLE findings ADD COLUMN intended_use TEXT NOT NULL DEFAULT 'undeclared';
ALTER TABLE findings ADD COLUMN intended_use_note TEXT NOT NULL DEFAULT '';
ALTER TABLE findings ADD COLUMN view_position TEXT NOT NULL DEFAULT '';
