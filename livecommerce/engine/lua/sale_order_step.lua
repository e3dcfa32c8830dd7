-- Moves one order through reserved -> paying -> paid | reserved -> expired | cancelled,
-- in one step with the stock it holds. Closes the race between a payment and the hold's
-- expiry: an order in `paying` is never expired (the expiry checks again later), and only
-- the one transition out of `reserved` gives the units back, so stock returns exactly once
-- and a late payment never lands on stock that was already released.
-- KEYS: sale, holds, orders, log   ARGV: order_id, action, now
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return '{"error":"not_found"}' end
local order = cjson.decode(raw)
local action, now, status = ARGV[2], tonumber(ARGV[3]), order.status

local function save(new_status, logged)
  order.status = new_status
  order.updated_at = now
  local json = cjson.encode(order)
  redis.call('HSET', KEYS[3], order.id, json)
  if logged then redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'o', json) end
  return json
end

local function reply(json, err)
  return '{"changed":true,"order":' .. json .. (err and (',"error":"' .. err .. '"') or '') .. '}'
end

local function give_back(new_status, err)
  local json = save(new_status, true)
  local left = redis.call('HINCRBY', KEYS[1], 'left', order.qty)
  redis.call('HINCRBY', KEYS[2], order.user_id, -order.qty)
  local changed = 'false'
  if redis.call('HGET', KEYS[1], 'status') == 'sold_out' then
    redis.call('HSET', KEYS[1], 'status', 'live')
    changed = 'true'
  end
  return '{"changed":true,"stock_changed":true,"status_changed":' .. changed .. ',"left":' ..
    left .. ',"order":' .. json .. (err and (',"error":"' .. err .. '"') or '') .. '}'
end

local function unchanged(err)
  return '{"order":' .. raw .. (err and (',"error":"' .. err .. '"') or '') .. '}'
end

if action == 'pay_begin' then
  if status == 'paid' then return unchanged(nil) end
  if status == 'paying' then return unchanged('conflict') end
  if status ~= 'reserved' then return unchanged('expired') end
  if now >= order.expires_at then return give_back('expired', 'expired') end
  return '{"order":' .. save('paying', false) .. '}'
elseif action == 'pay_ok' then
  if status == 'paying' then return reply(save('paid', true), nil) end
  if status == 'paid' then return unchanged(nil) end
  return unchanged('expired')
elseif action == 'pay_fail' then
  if status ~= 'paying' then return unchanged(nil) end
  if now < order.expires_at then return '{"order":' .. save('reserved', false) .. '}' end
  return give_back('expired', nil)
elseif action == 'expire' then
  if status == 'reserved' and now >= order.expires_at then return give_back('expired', nil) end
  return unchanged(nil)
elseif action == 'cancel' then
  if status == 'reserved' then return give_back('cancelled', nil) end
  if status == 'cancelled' or status == 'expired' then return unchanged(nil) end
  return unchanged('conflict')
end
return '{"error":"invalid"}'
