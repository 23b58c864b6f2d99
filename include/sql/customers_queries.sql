-- Named queries on the customers table ("-- name: <query>" starts one). {table} is a validated, quoted
-- identifier; every value is a bound parameter (:name), never formatted into the text.

-- name: changes_since
-- Rows changed after the watermark (updated_at, id), oldest first, one batch at a time. The id breaks
-- ties between rows written in the same instant, so a batch boundary never skips or repeats a row.
SELECT id, customer_id, name, email, country, segment, updated_at, deleted_at
FROM {table}
WHERE updated_at > :since_at
   OR (updated_at = :since_at AND id > :since_id)
ORDER BY updated_at, id
LIMIT :batch_size

-- name: row_count
SELECT COUNT(*) FROM {table}

-- name: max_id
SELECT COALESCE(MAX(id), 0) FROM {table}

-- name: live_ids
SELECT id FROM {table} WHERE deleted_at IS NULL ORDER BY id

-- name: insert_customer
INSERT INTO {table} (id, customer_id, name, email, country, segment, updated_at, deleted_at)
VALUES (:id, :customer_id, :name, :email, :country, :segment, :updated_at, NULL)

-- name: update_customer
UPDATE {table}
SET name = :name, email = :email, segment = :segment, updated_at = :updated_at
WHERE id = :id AND deleted_at IS NULL

-- name: get_customer
SELECT id, customer_id, name, email, country, segment FROM {table} WHERE id = :id

-- name: soft_delete_customer
UPDATE {table}
SET deleted_at = :updated_at, updated_at = :updated_at
WHERE id = :id AND deleted_at IS NULL
