-- Migration 12 (issue #14), PostgreSQL twin: a per-frame model's finding on a whole clip is a
-- row with frame 0, and the frames (1-based, comma-separated) where its smoothed probability
-- reached the label's threshold. Every row recorded before is a single frame's or image's: none.
ALTER TABLE findings ADD COLUMN fired_frames TEXT NOT NULL DEFAULT '';
-- The endoscope's field of view the frame was cropped to (JSON: x, y, radius, confidence);
-- empty when the model is not cropped to one or none was found.
ALTER TABLE findings ADD COLUMN field_of_view TEXT NOT NULL DEFAULT '';
