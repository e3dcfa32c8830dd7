-- Race closed: two concurrent releases of the same holding both giving back the full
-- amount, returning more units to the pool than were ever taken.
-- KEYS: pool (int), holds (hash holder -> n)   ARGV: holder, qty
-- Returns the number of units actually released.
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local n = math.min(held, tonumber(ARGV[2]))
if n <= 0 then
  return 0
end
if n == held then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HINCRBY', KEYS[2], ARGV[1], -n)
end
redis.call('INCRBY', KEYS[1], n)
return n
