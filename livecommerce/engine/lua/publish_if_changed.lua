-- Race closed: several nodes noticing the same new value (e.g. the online count) at once;
-- compare-and-set plus publish in one step lets exactly one of them broadcast it.
-- KEYS: seq, last_values
-- ARGV: dedupe field, value, json, channel, event, publish command (see publish.lua)
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  return false
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local seq = redis.call('INCR', KEYS[1])
redis.call(ARGV[6], ARGV[4], seq .. '\n' .. ARGV[5] .. '\n' .. ARGV[3])
return seq
