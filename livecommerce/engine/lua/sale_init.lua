-- Installs a flash sale in one step, once. Closes the race of two nodes (re)building the
-- same sale after a restart: the second finds it there and changes nothing, so stock is
-- never reset under buyers who already hold units.
-- KEYS: sale, holds, orders, log
-- ARGV: terms_json, left, status, starts_at, ends_at, per_user_limit, holds_json, order_json...
if redis.call('EXISTS', KEYS[1]) == 1 then return '{"installed":false}' end
redis.call('HSET', KEYS[1], 'terms', ARGV[1], 'left', ARGV[2], 'status', ARGV[3],
  'starts_at', ARGV[4], 'ends_at', ARGV[5], 'limit', ARGV[6])
for user, units in pairs(cjson.decode(ARGV[7])) do
  redis.call('HSET', KEYS[2], user, units)
end
for i = 8, #ARGV do
  local order = cjson.decode(ARGV[i])
  redis.call('HSET', KEYS[3], order.id, ARGV[i])
end
return '{"installed":true}'
