-- The same-database read model (READ_STORE=postgres): a read shape over the
-- write tables, owned by the read side (src/read_side/postgres/). Maintained
-- in both modes, so switching READ_STORE needs no backfill.

-- The words search matches: the skus and the note, split at anything that is
-- not a letter or digit (as Elasticsearch's standard analyzer splits them;
-- 'SKU-42' is 'sku' and '42'), lower-cased, no stemming, no stop words.
CREATE FUNCTION order_search_words(skus text, note text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('simple',
        regexp_replace(coalesce(skus, '') || ' ' || coalesce(note, ''), '[^[:alnum:]]+', ' ', 'g'))
$$;

-- One row per order: its searchable words. An order's items and note never
-- change after it is placed, so the row is written once, when the items are.
CREATE TABLE order_search (
    order_id uuid PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    document tsvector NOT NULL
);
CREATE INDEX order_search_document_idx ON order_search USING gin (document);

-- Filled by the database when an order's items are inserted (one statement
-- per order on the write side), so the write side's code knows nothing of it.
CREATE FUNCTION order_search_index_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_search (order_id, document)
    SELECT o.id, order_search_words(
               (SELECT string_agg(i.sku, ' ' ORDER BY i.position) FROM order_items i
                 WHERE i.order_id = o.id),
               o.note)
    FROM orders o WHERE o.id IN (SELECT DISTINCT order_id FROM new_items)
    ON CONFLICT (order_id) DO UPDATE SET document = excluded.document;
    RETURN NULL;
END
$$;
CREATE TRIGGER order_search_on_items AFTER INSERT ON order_items
    REFERENCING NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION order_search_index_items();

INSERT INTO order_search (order_id, document)
SELECT o.id, order_search_words(
           (SELECT string_agg(i.sku, ' ' ORDER BY i.position) FROM order_items i
             WHERE i.order_id = o.id),
           o.note)
FROM orders o
ON CONFLICT DO NOTHING;

-- A user's orders newest first, in the list's order: by the millisecond (as
-- Elasticsearch stores the time, and as cursors carry it), then the id.
CREATE INDEX orders_user_newest_idx
    ON orders (user_id, date_trunc('milliseconds', placed_at AT TIME ZONE 'UTC') DESC, id DESC);

-- An order as the list shows it.
CREATE VIEW order_list AS
SELECT o.id, o.user_id, u.username, o.note, o.total_cents, o.currency, o.placed_at,
       o.status, o.cancelled_at, o.version,
       date_trunc('milliseconds', o.placed_at AT TIME ZONE 'UTC') AS sort_at,
       s.document,
       coalesce((SELECT jsonb_agg(jsonb_build_object('sku', i.sku, 'quantity', i.quantity,
                                                     'unit_price_cents', i.unit_price_cents)
                                  ORDER BY i.position)
                   FROM order_items i WHERE i.order_id = o.id), '[]'::jsonb) AS items
FROM orders o
JOIN users u ON u.id = o.user_id
LEFT JOIN order_search s ON s.order_id = o.id;
