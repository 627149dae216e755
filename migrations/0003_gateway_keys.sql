-- Gateway keys created through the admin API, by id: the arbiter of who may have an id.
-- The request path reads KV (`key:<sha256>`); D1 decides, in one statement each, that two
-- concurrent creates of one id make one key (the primary key), that a revoked key stays
-- revoked (revoked_ms is set once), and, with the audit log's claims, that an id is never
-- both the config's and the admin API's (src/edge/keystore.rs). Keys created before this
-- migration are only in KV; the admin API still finds them there.

CREATE TABLE gateway_keys (
  id          TEXT PRIMARY KEY,
  sha256      TEXT NOT NULL UNIQUE,
  team        TEXT,
  created_ms  INTEGER NOT NULL,
  created_by  TEXT NOT NULL,        -- the admin token's label
  revoked_ms  INTEGER,
  revoked_by  TEXT
);
