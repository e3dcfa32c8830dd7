-- One atomic step per buy. Idempotency, window, stock and the per-user limit are checked
-- and the units reserved together, so concurrent buyers on any number of nodes cannot
-- oversell (read-then-write stock), a retried request_id cannot reserve twice (a duplicate
-- check placed after the decrement), and stock can never go negative.
-- KEYS: sale, holds, orders, log, idempotency
-- ARGV: now, user_id, qty, order_json, idempotency_ttl_ms
if tonumber(ARGV[3]) < 1 then return '{"error":"invalid"}' end  -- never add stock
local prior = redis.call('GET', KEYS[5])
if prior then
  local order = redis.call('HGET', KEYS[3], prior)
  if order then return '{"new":false,"order":' .. order .. '}' end
end
local s = redis.call('HMGET', KEYS[1], 'left', 'status', 'starts_at', 'ends_at', 'limit')
if not s[1] then return '{"error":"not_found"}' end
local now = tonumber(ARGV[1])
if now < tonumber(s[3]) then return '{"error":"not_started"}' end
if s[2] == 'ended' or now >= tonumber(s[4]) then return '{"error":"ended"}' end
local left = tonumber(s[1])
local qty = tonumber(ARGV[3])
if left < qty then return '{"error":"sold_out"}' end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if held + qty > tonumber(s[5]) then return '{"error":"limit_exceeded"}' end
left = left - qty
local status_changed = 'false'
redis.call('HSET', KEYS[1], 'left', left)
if left == 0 then
  redis.call('HSET', KEYS[1], 'status', 'sold_out')
  status_changed = 'true'
elseif s[2] == 'scheduled' then
  redis.call('HSET', KEYS[1], 'status', 'live')
end
redis.call('HINCRBY', KEYS[2], ARGV[2], qty)
local order_id = cjson.decode(ARGV[4]).id
redis.call('HSET', KEYS[3], order_id, ARGV[4])
redis.call('SET', KEYS[5], order_id, 'PX', ARGV[5])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'o', ARGV[4])
return '{"new":true,"stock_changed":true,"status_changed":' .. status_changed ..
  ',"left":' .. left .. ',"order":' .. ARGV[4] .. '}'
