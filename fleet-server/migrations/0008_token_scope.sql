-- RVM Fleet schema, version 8: a token may be limited to a store or a retailer
-- (fleet-server/src/auth.rs, Scope). NULL: the whole fleet (every token made before).
-- The text is `site=STORE` or `retailer=RETAILER`; a row whose scope does not parse is
-- skipped when tokens are read (refused, never widened to the whole fleet).
ALTER TABLE tokens ADD COLUMN scope text;
