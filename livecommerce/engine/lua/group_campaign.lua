-- Reads a campaign's counters, and with ARGV[1] = "1" its open groups, in one step, so the
-- stock, the counters and the groups are of one instant (the join snapshot).
-- KEYS: campaign, groups, open, orders, log   ARGV: with_groups ("1" | "0")
--#include _group.lua
if redis.call('EXISTS', C) == 0 then return nil end
local groups = {}
if ARGV[1] == '1' then
  for _, id in ipairs(redis.call('HKEYS', OPEN)) do
    table.insert(groups, redis.call('HGET', G, id))
  end
end
return '{"terms":' .. redis.call('HGET', C, 'terms') .. ',"campaign":' .. summary() ..
  ',"groups":' .. list(groups) .. '}'
