-- Issue 10: the port an application entity listens on, so tramy can open an association to it
-- (a Storage Commitment result sent after the requesting association has ended, PS3.4 J.3.3).
ALTER TABLE application_entities ADD COLUMN port BIGINT;
