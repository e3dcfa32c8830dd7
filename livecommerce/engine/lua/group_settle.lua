-- Settles a group at its expiry, once: `open` -> `succeeded` when its paid members reached
-- the group size (orders confirmed at the tier price reached), else `failed` (orders
-- `refunding`, units back to the campaign). Closes two races: an expired group is never
-- taken for a successful one (success needs the size, counted in the same step that
-- closes the group), and a re-fired timer (its first node died mid-settlement) finds the
-- group settled and gets the same member orders back, so the caller's refunds, keyed per
-- member order id, are repeated harmlessly and never doubled. While a seat is still
-- `paying` nothing is decided: the caller resolves that payment first.
-- KEYS: campaign, groups, open, orders, log   ARGV: group_id, now
--#include _group.lua
local raw = redis.call('HGET', G, ARGV[1])
if not raw then return err('not_found') end
local group, now = cjson.decode(raw), tonumber(ARGV[2])

local function reply(extra, group_json, orders)
  return '{' .. extra .. '"group":' .. group_json .. ',"orders":' .. list(orders) ..
    ',"campaign":' .. summary() .. '}'
end

if group.status == 'succeeded' or group.status == 'failed' then
  return reply('', raw, member_orders(group))
end
if now < group.expires_at then return reply('"early":true,', raw, {}) end
local paying = {}
for _, m in ipairs(group.members) do
  if m.status == 'paying' then table.insert(paying, '"' .. m.order_id .. '"') end
end
if #paying > 0 then return reply('"paying":' .. list(paying) .. ',', raw, {}) end
local outcome = 'failed'
if #group.members >= tonumber(redis.call('HGET', C, 'size')) then outcome = 'succeeded' end
local orders, reopened = settle(group, now, outcome)
return reply('"changed":true,"status_changed":' .. tostring(reopened) .. ',',
  save_group(group, now), orders)
