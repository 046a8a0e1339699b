-- Sessions end at their absolute lifetime or after being idle, whichever
-- comes first. `expires_at` becomes the effective end: use moves it forward
-- (never past `absolute_expires_at`), so a session left idle is an expired
-- row, and a retention delete on `expires_at < now()` removes it too.
ALTER TABLE sessions ADD COLUMN absolute_expires_at timestamptz;
UPDATE sessions SET absolute_expires_at = expires_at;
ALTER TABLE sessions ALTER COLUMN absolute_expires_at SET NOT NULL;
