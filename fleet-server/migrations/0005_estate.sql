-- RVM Fleet schema, version 5: the estate (issue 22, item 1; fleet-server/src/estate).
-- Retailers own stores; a store's id is the `site` its machines report, so machines join
-- their store by `devices.site` without a column of their own (a site no store has is listed
-- by the API, never dropped). Opening hours are one text per weekday (`08:00-20:00`,
-- `closed`, `24h`: docs/estate.md), kept as a JSON object.
CREATE TABLE retailers (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stores (
    id          text PRIMARY KEY,
    retailer    text NOT NULL REFERENCES retailers (id) ON DELETE RESTRICT,
    name        text NOT NULL,
    address     text NOT NULL DEFAULT '',
    time_zone   text NOT NULL,
    hours       jsonb NOT NULL DEFAULT '{}',
    latitude    double precision,
    longitude   double precision,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((latitude IS NULL) = (longitude IS NULL))
);
CREATE INDEX stores_retailer ON stores (retailer);
