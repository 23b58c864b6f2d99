-- The shop's customers table in the source (OLTP) database; the same DDL runs on SQLite and PostgreSQL.
-- {table} and {index} are identifiers from configuration: checked against ^[A-Za-z_][A-Za-z0-9_]*$ and
-- quoted by the dialect before they are substituted. Values are never substituted, only bound.
-- Timestamps are UTC without a zone (TIMESTAMP); ids are assigned by the writer (max(id) + 1).
CREATE TABLE IF NOT EXISTS {table} (
    id          INTEGER      NOT NULL PRIMARY KEY,
    customer_id VARCHAR(64)  NOT NULL UNIQUE,
    name        VARCHAR(200) NOT NULL,
    email       VARCHAR(200) NOT NULL,
    country     CHAR(2)      NOT NULL,
    segment     VARCHAR(16)  NOT NULL,
    updated_at  TIMESTAMP    NOT NULL,
    deleted_at  TIMESTAMP
);

-- Serves the change query below: a range scan from the watermark, already in (updated_at, id) order.
CREATE INDEX IF NOT EXISTS {index} ON {table} (updated_at, id);
