-- The order_search trigger, looking each new order up by its key.
--
-- The first version joined `orders` to the statement's new items in one
-- query. PL/pgSQL plans that query once per connection and keeps the plan;
-- planned while `orders` was small (a fresh database, before autovacuum's
-- first ANALYZE) it was a hash join over a sequential scan of `orders`, and
-- every later order paid a scan of the whole, growing table: in the
-- benchmark two thirds of PostgreSQL's CPU at 1,000 orders/s
-- (docs/BENCHMARKS.md). Equality on the primary key with a parameter plans
-- as an index lookup whatever the statistics say.
CREATE OR REPLACE FUNCTION order_search_index_items() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    placed uuid;
BEGIN
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
