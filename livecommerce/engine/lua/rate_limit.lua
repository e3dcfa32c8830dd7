-- Race closed: two requests reading the same bucket and both spending its last token.
-- KEYS: bucket (hash tokens, ts)   ARGV: rate_per_s, burst
-- Returns 0 when a token was taken, else ms until one is free.
--#include _bucket.lua
return take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), server_ms())
