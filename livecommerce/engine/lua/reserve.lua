-- Race closed: oversell. Checking stock and the holder's limit, then decrementing, as
-- separate commands lets concurrent buyers take the same last units.
-- KEYS: pool (int), holds (hash holder -> n)   ARGV: holder, qty, limit
-- Returns {ok (1/0), reason, left, held}.
local qty = tonumber(ARGV[2])
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if left < qty then
  return {0, 'sold_out', left, held}
end
if held + qty > tonumber(ARGV[3]) then
  return {0, 'limit_exceeded', left, held}
end
left = redis.call('DECRBY', KEYS[1], qty)
held = redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
return {1, '', left, held}
