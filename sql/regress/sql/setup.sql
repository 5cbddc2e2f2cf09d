-- The roles an installation would have: applications get a collab_* role, never the tables.
CREATE EXTENSION pg_collab;
CREATE ROLE app LOGIN IN ROLE collab_writer;       -- edits every document
CREATE ROLE viewer LOGIN IN ROLE collab_reader;    -- reads every document
CREATE ROLE dba LOGIN IN ROLE collab_admin;        -- compacts, prunes, deletes, sets rights
CREATE ROLE bridge LOGIN IN ROLE collab_bridge;    -- what collab-bridge logs in as
CREATE ROLE alice LOGIN IN ROLE collab_user;       -- rights per document only (see rights.sql)
CREATE ROLE bob LOGIN IN ROLE collab_user;
CREATE ROLE carol LOGIN IN ROLE collab_user;
CREATE ROLE mallory LOGIN;                         -- may only connect
