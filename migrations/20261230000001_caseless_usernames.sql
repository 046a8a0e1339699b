-- Usernames are unique whatever their case: `Ada` and `ada` are one name.
-- A unique index on lower(username) replaces the exact-case constraint
-- (which it implies); the name stays stored as it was typed at sign-up.
-- Sign-up conflicts on this index (ON CONFLICT ((lower(username)))), and
-- login finds a user by lower(username) = lower($1), through it.
--
-- Names that already differ only in case are NOT merged: they are two
-- accounts, with their own passwords and orders, and picking one is a
-- person's decision. If any exist, this migration fails, names every group
-- in its error, and changes nothing (sqlx runs it in one transaction);
-- every command that migrates (`serve`, `migrate`, …) stops there. The
-- operator then renames all but one account of each group, e.g.
--   UPDATE users SET username = 'ada_2' WHERE id = '<uuid of the other Ada>';
-- tells those users their new name, and runs `sightline migrate` again.
-- Orders already placed keep the name they were placed under.
--
-- SHARE MODE first: no sign-up may add a collision between the check and
-- the index (CREATE INDEX takes the same lock, so this costs nothing more).
LOCK TABLE users IN SHARE MODE;

DO $$
DECLARE
    groups bigint;
    listed text;
BEGIN
    -- Each group as its names in JSON quotes ("Ada", "ada"); at most 20 of
    -- them in the message, with the count of all.
    SELECT count(*), string_agg(names, '; ' ORDER BY rank) FILTER (WHERE rank <= 20)
    INTO groups, listed
    FROM (
        SELECT string_agg(to_json(username)::text, ', ' ORDER BY username) AS names,
               row_number() OVER (ORDER BY lower(username)) AS rank
        FROM users
        GROUP BY lower(username)
        HAVING count(*) > 1
    ) collisions;
    IF groups > 0 THEN
        RAISE EXCEPTION '%', format(
            'usernames must be unique whatever their case, and %s group(s) of names '
            'differ only in case: %s%s. Nothing was changed. Rename all but one '
            'account of each group (UPDATE users SET username = ... WHERE id = ...), '
            'then migrate again; see migrations/20261230000001_caseless_usernames.sql',
            groups, listed,
            CASE WHEN groups > 20 THEN ' (the first 20)' ELSE '' END);
    END IF;
END
$$;

CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
ALTER TABLE users DROP CONSTRAINT users_username_key;
