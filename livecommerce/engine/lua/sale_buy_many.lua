-- The buys of one sale that reached a node in the same instant, merged into one step (a
-- hot item's requests merged before they reach the stock: one script call and one reply
-- for the batch instead of one per buyer). Each buy is judged exactly as sale_buy judges
-- it, in the order given, so the batch is equivalent to that many sale_buy calls back to
-- back; a later buy sees the earlier ones (a retry of the same request_id in the same
-- batch gets the order the first one placed).
-- KEYS: sale, holds, orders, log, then one idempotency key per buy
-- ARGV: idempotency_ttl_ms, then now, user_id, qty, order_json per buy
-- Returns a JSON array: one sale_buy result per buy.
--#include _sale_buy.lua
local ttl = ARGV[1]
local results = {}
for i = 5, #KEYS do
  local a = 2 + (i - 5) * 4
  results[#results + 1] = sale_buy(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[i],
    tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ttl)
end
return '[' .. table.concat(results, ',') .. ']'
