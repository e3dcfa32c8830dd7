-- Moves one member's order on after its charge, in one step with its seat:
--   paying -> paid: the seat is kept; a `forming` group opens once its leader has paid,
--     and a group succeeds the moment its last seat (the largest tier) is paid;
--   paying -> declined: the seat and its unit are released in the same step, so a declined
--     payment never leaves a phantom member, and a group whose leader was declined is
--     dropped before anyone could see it;
--   refunding -> refunded: a failed group's refund went through.
-- Each transition happens once: a replay (a retried request, the watchdog racing the payer)
-- finds the order already moved and changes nothing, so no seat or unit is released twice,
-- and a charge that completes after its seat was released is answered `expired` (the
-- caller refunds it).
-- KEYS: campaign, groups, open, orders, log   ARGV: order_id, action, now
--#include _group.lua
local raw = redis.call('HGET', O, ARGV[1])
if not raw then return err('not_found') end
local order = cjson.decode(raw)
local action, now, status = ARGV[2], tonumber(ARGV[3]), order.status

local function unchanged(code)
  return '{"order":' .. raw .. (code and (',"error":"' .. code .. '"') or '') .. '}'
end

if action == 'refunded' then
  if status ~= 'refunding' then return unchanged(nil) end
  return '{"changed":true,"order":' .. save_order(order, 'refunded', now) .. '}'
end
if action ~= 'pay_ok' and action ~= 'pay_fail' then return err('invalid') end
if status == 'declined' and action == 'pay_ok' then return unchanged('expired') end
if status ~= 'paying' then return unchanged(nil) end
local group_raw = redis.call('HGET', G, order.ref_id)
if not group_raw then return unchanged('conflict') end
local group = cjson.decode(group_raw)
local seat = 0
for i, m in ipairs(group.members) do
  if m.order_id == order.id then seat = i end
end

local opened, settled, reopened, orders = 'false', 'null', false, {}
local order_json, group_json
if action == 'pay_ok' then
  group.members[seat].status = 'paid'
  order_json = save_order(order, 'paid', now)
  if group.status == 'forming' then
    group.status, opened = 'open', 'true'
  end
  if paid_count(group) == tonumber(redis.call('HGET', C, 'max')) then
    orders = settle(group, now, 'succeeded')
    settled = '"succeeded"'
    order_json = redis.call('HGET', O, order.id) -- confirmed now, at the tier price
  end
  group_json = save_group(group, now)
else
  order_json = save_order(order, 'declined', now)
  reopened = give_back(1)
  if group.status == 'forming' then -- the leader: the group never opened
    group.members[seat].status = 'declined'
    group.status = 'cancelled'
    group_json = save_group(group, now)
    redis.call('HDEL', G, group.id)
  else
    table.remove(group.members, seat)
    group_json = save_group(group, now)
  end
end
return '{"changed":true,"opened":' .. opened .. ',"settled":' .. settled ..
  ',"status_changed":' .. tostring(reopened) .. ',"order":' .. order_json .. ',"group":' ..
  group_json .. ',"orders":' .. list(orders) .. ',"campaign":' .. summary() .. '}'
