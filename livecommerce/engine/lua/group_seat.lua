-- Takes a seat in a group in ONE step: the group's capacity, the caller's membership, the
-- campaign's stock and the seat itself are decided together. This closes the overfill race
-- (joiners on several nodes all see "not full", then all write themselves in at payment
-- time), the double-seat race (one user joining twice at once) and the retry race (a
-- retried request_id taking a second seat). The payment happens after this step, against
-- the seat already held (member status `paying`); group_step settles it either way.
-- KEYS: campaign, groups, open, orders, log, idempotency
-- ARGV: now, user_id, user_name, mode (open|join|auto), group_id (join), order_json,
--       group_json (the group to open), idempotency_ttl_ms
--#include _group.lua
local now, user, name, mode = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]

local prior = redis.call('GET', KEYS[6])
if prior then
  local order = redis.call('HGET', O, prior)
  if order then
    local group = redis.call('HGET', G, cjson.decode(order).ref_id) or 'null'
    return '{"new":false,"order":' .. order .. ',"group":' .. group .. ',"campaign":' ..
      summary() .. '}'
  end
end
if redis.call('EXISTS', C) == 0 then return err('not_found') end
local max = tonumber(redis.call('HGET', C, 'max'))
local size = tonumber(redis.call('HGET', C, 'size'))

local function member_of(group)
  for _, m in ipairs(group.members) do
    if m.id == user then return true end
  end
  return false
end

-- Why this user cannot sit in this group now, or nil.
local function refusal(group)
  if group.status == 'forming' then return 'not_found' end -- its leader is still paying
  if member_of(group) then return 'already_joined' end
  if group.status == 'failed' or now >= group.expires_at then return 'expired' end
  if group.status ~= 'open' or #group.members >= max then return 'group_full' end
  return nil
end

-- Auto-match: the open group needing the fewest members to reach `size`, then the
-- earliest expiry, then the smallest id; groups the caller is in are skipped.
local function best_open_group()
  local found = {}
  local index = redis.call('HGETALL', OPEN)
  for i = 1, #index, 2 do
    local seats, expires = string.match(index[i + 1], '(%d+) (%d+)')
    seats, expires = tonumber(seats), tonumber(expires)
    if seats < max and expires > now then
      table.insert(found, {math.max(size - seats, 0), expires, index[i]})
    end
  end
  table.sort(found, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[3] < b[3]
  end)
  for _, candidate in ipairs(found) do
    local group = cjson.decode(redis.call('HGET', G, candidate[3]))
    if refusal(group) == nil then return group end
  end
  return nil
end

local group, opened = nil, false
if mode == 'join' then
  local raw = redis.call('HGET', G, ARGV[5])
  if not raw then return err('not_found') end
  group = cjson.decode(raw)
  local why = refusal(group)
  if why then return err(why) end
elseif mode == 'auto' then
  group = best_open_group()
elseif mode ~= 'open' then
  return err('invalid')
end
if group == nil then
  if now >= tonumber(redis.call('HGET', C, 'ends_at')) then return err('ended') end
  group, opened = cjson.decode(ARGV[7]), true
  group.members = {}
end

local left = tonumber(redis.call('HGET', C, 'left'))
local status_changed = 'false'
if left == 0 then return err('sold_out') end
if left > 0 then
  redis.call('HSET', C, 'left', left - 1)
  if left == 1 then
    redis.call('HSET', C, 'status', 'sold_out')
    status_changed = 'true'
  end
end
local order = cjson.decode(ARGV[6])
order.ref_id = group.id
order.expires_at = group.expires_at
table.insert(group.members, {id = user, name = name, order_id = order.id, status = 'paying'})
local group_json = save_group(group, now)
local order_json = save_order(order, 'paying', now)
redis.call('SET', KEYS[6], order.id, 'PX', ARGV[8])
return '{"new":true,"opened":' .. tostring(opened) .. ',"status_changed":' .. status_changed ..
  ',"order":' .. order_json .. ',"group":' .. group_json .. ',"campaign":' .. summary() .. '}'
