-- One buy (inlined where a script says "--#include _sale_buy.lua"). Idempotency, window,
-- stock and the per-user limit are checked and the units reserved together, so concurrent
-- buyers on any number of nodes cannot oversell (read-then-write stock), a retried
-- request_id cannot reserve twice (a duplicate check placed after the decrement), and
-- stock can never go negative.
local function sale_buy(sale, holds, orders, log, idem, now, user_id, qty, order_json, ttl)
  if qty < 1 then return '{"error":"invalid"}' end  -- never add stock
  local prior = redis.call('GET', idem)
  if prior then
    local order = redis.call('HGET', orders, prior)
    if order then return '{"new":false,"order":' .. order .. '}' end
  end
  local s = redis.call('HMGET', sale, 'left', 'status', 'starts_at', 'ends_at', 'limit')
  if not s[1] then return '{"error":"not_found"}' end
  if now < tonumber(s[3]) then return '{"error":"not_started"}' end
  if s[2] == 'ended' or now >= tonumber(s[4]) then return '{"error":"ended"}' end
  local left = tonumber(s[1])
  if left < qty then return '{"error":"sold_out"}' end
  local held = tonumber(redis.call('HGET', holds, user_id) or '0')
  if held + qty > tonumber(s[5]) then return '{"error":"limit_exceeded"}' end
  left = left - qty
  local status_changed = 'false'
  redis.call('HSET', sale, 'left', left)
  if left == 0 then
    redis.call('HSET', sale, 'status', 'sold_out')
    status_changed = 'true'
  elseif s[2] == 'scheduled' then
    redis.call('HSET', sale, 'status', 'live')
  end
  redis.call('HINCRBY', holds, user_id, qty)
  local order_id = cjson.decode(order_json).id
  redis.call('HSET', orders, order_id, order_json)
  redis.call('SET', idem, order_id, 'PX', ttl)
  redis.call('XADD', log, 'MAXLEN', '~', 100000, '*', 'o', order_json)
  return '{"new":true,"stock_changed":true,"status_changed":' .. status_changed ..
    ',"left":' .. left .. ',"order":' .. order_json .. '}'
end
