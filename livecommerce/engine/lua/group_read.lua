-- Reads one group with its campaign's counters, of one instant.
-- KEYS: campaign, groups, open, orders, log   ARGV: group_id
--#include _group.lua
local raw = redis.call('HGET', G, ARGV[1])
if not raw then return nil end
return '{"group":' .. raw .. ',"campaign":' .. summary() .. '}'
