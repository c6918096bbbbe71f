-- What a session was started with and from, for the person's list of sessions: the browser and
-- system the user agent named, and the network of the address (never the address itself).
ALTER TABLE sessions ADD COLUMN device text, ADD COLUMN network text;
