-- The same-database search words (`order_search`) kept only by the mode that
-- reads them (issue #25). The trigger on order_items built a tsvector and
-- updated a GIN index for every order, in the Elasticsearch mode too, where
-- nothing reads them: half of PostgreSQL's execution time for the order's
-- statement in the benchmark's profile (docs/BENCHMARKS.md).
--
-- An instance in the Elasticsearch mode opens its connections with
-- `sightline.order_search = off` (in the start-up packet: no round trip), and
-- the trigger does nothing for their writes. Every other writer — an
-- instance in the same-database mode, psql, a script — keeps the words as
-- before. An instance starting in the same-database mode first adds the
-- words of every order that has none (`read_side::postgres::search_words`),
-- before it notices anything: moving back from two stores to one.
CREATE OR REPLACE FUNCTION order_search_index_items() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    placed uuid;
BEGIN
    IF current_setting('sightline.order_search', true) = 'off' THEN
        RETURN NULL;
    END IF;
    FOR placed IN SELECT DISTINCT order_id FROM new_items LOOP
        INSERT INTO order_search (order_id, document)
        SELECT o.id, order_search_words(
                   (SELECT string_agg(i.sku, ' ' ORDER BY i.position) FROM order_items i
                     WHERE i.order_id = placed),
                   o.note)
        FROM orders o WHERE o.id = placed
        ON CONFLICT (order_id) DO UPDATE SET document = excluded.document;
    END LOOP;
    RETURN NULL;
END
$$;

-- The fill reads the orders and their items to build their words, as the
-- trigger does, in one statement of its own (see the table owners in
-- 20261231000001_table_owners.sql).
COMMENT ON TABLE orders IS
  'owner=crates/core/src/write_side/ readers=crates/core/src/read_side/read_your_writes.rs,crates/core/src/read_side/postgres/search_words.rs';
COMMENT ON TABLE order_items IS
  'owner=crates/core/src/write_side/ readers=crates/core/src/read_side/postgres/search_words.rs';
