-- One atomic step per buy (the rules: _sale_buy.lua).
-- KEYS: sale, holds, orders, log, idempotency
-- ARGV: now, user_id, qty, order_json, idempotency_ttl_ms
--#include _sale_buy.lua
return sale_buy(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], tonumber(ARGV[1]), ARGV[2],
  tonumber(ARGV[3]), ARGV[4], ARGV[5])
