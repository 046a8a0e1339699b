-- The no-JS form flow keeps the user's latest consistency token in the
-- session, so the page after the redirect (and any later one) shows the
-- user's own writes even before search has them.
ALTER TABLE sessions ADD COLUMN consistency_token text;
