-- Shared by the group_*.lua scripts (inlined where a script says "--#include _group.lua").
-- KEYS of every group op: campaign hash, groups hash (id -> group json), open index
-- (id -> "<seats> <expires_at>"), orders hash (id -> order json), log stream.
local C, G, OPEN, O, LOG = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function err(code)
  return '{"error":"' .. code .. '"}'
end

local function summary()
  local c = redis.call('HMGET', C, 'left', 'status', 'succeeded', 'failed')
  return '{"left":' .. c[1] .. ',"status":"' .. c[2] .. '","succeeded":' .. c[3] ..
    ',"failed":' .. c[4] .. ',"open":' .. redis.call('HLEN', OPEN) .. '}'
end

local function list(items)
  return '[' .. table.concat(items, ',') .. ']'
end

local function paid_count(group)
  local n = 0
  for _, m in ipairs(group.members) do
    if m.status == 'paid' then n = n + 1 end
  end
  return n
end

local function save_group(group, now)
  group.updated_at = now
  local json = cjson.encode(group)
  redis.call('HSET', G, group.id, json)
  redis.call('XADD', LOG, 'MAXLEN', '~', 100000, '*', 'g', json)
  if group.status == 'open' then
    redis.call('HSET', OPEN, group.id, string.format('%d %d', #group.members, group.expires_at))
  else
    redis.call('HDEL', OPEN, group.id)
  end
  return json
end

local function save_order(order, status, now)
  order.status = status
  order.updated_at = now
  local json = cjson.encode(order)
  redis.call('HSET', O, order.id, json)
  redis.call('XADD', LOG, 'MAXLEN', '~', 100000, '*', 'o', json)
  return json
end

-- Units go back to a capped campaign (left = -1: no cap). True if it was sold out.
local function give_back(n)
  local left = tonumber(redis.call('HGET', C, 'left'))
  if left < 0 or n == 0 then return false end
  redis.call('HSET', C, 'left', left + n)
  if redis.call('HGET', C, 'status') == 'sold_out' then
    redis.call('HSET', C, 'status', 'live')
    return true
  end
  return false
end

-- The price of the largest tier `members` reaches (tiers: [[size, price], ...] ascending).
local function tier_price(members)
  local price = tonumber(redis.call('HGET', C, 'price'))
  for _, tier in ipairs(cjson.decode(redis.call('HGET', C, 'tiers'))) do
    if members >= tier[1] then price = tier[2] end
  end
  return price
end

-- Settles a group whose members have all paid: succeeded (orders confirmed at the tier
-- price reached, the difference owed back in refund_cents) or failed (orders refunding,
-- units back). Returns the member orders' JSON and whether the campaign was sold out.
local function settle(group, now, outcome)
  local base = tonumber(redis.call('HGET', C, 'price'))
  local final = tier_price(#group.members)
  local orders, reopened = {}, false
  for _, m in ipairs(group.members) do
    local order = cjson.decode(redis.call('HGET', O, m.order_id))
    if outcome == 'succeeded' then
      order.unit_price_cents = final
      order.amount_cents = final * order.qty
      order.refund_cents = (base - final) * order.qty
      table.insert(orders, save_order(order, 'confirmed', now))
    else
      order.refund_cents = order.amount_cents
      table.insert(orders, save_order(order, 'refunding', now))
    end
  end
  group.status = outcome
  group.settled_at = now
  if outcome == 'succeeded' then
    group.price_cents = final
  else
    reopened = give_back(#group.members)
  end
  redis.call('HINCRBY', C, outcome, 1)
  return orders, reopened
end

local function member_orders(group)
  local orders = {}
  for _, m in ipairs(group.members) do
    table.insert(orders, redis.call('HGET', O, m.order_id))
  end
  return orders
end
