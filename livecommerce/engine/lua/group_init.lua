-- Installs a group-buy campaign once. Closes the race of two nodes (re)installing the same
-- campaign: the second finds it there and changes nothing, so stock and counters are never
-- reset under members who hold seats.
-- KEYS: campaign, groups, open, orders, log
-- ARGV: terms_json, group_size, max_size, price_cents, tiers_json ([[size, price], ...]),
--       ends_at, left (-1: no cap)
--#include _group.lua
if redis.call('EXISTS', C) == 1 then return '{"installed":false}' end
local status = 'live'
if tonumber(ARGV[7]) == 0 then status = 'sold_out' end
redis.call('HSET', C, 'terms', ARGV[1], 'size', ARGV[2], 'max', ARGV[3], 'price', ARGV[4],
  'tiers', ARGV[5], 'ends_at', ARGV[6], 'left', ARGV[7], 'status', status,
  'succeeded', 0, 'failed', 0)
return '{"installed":true}'
