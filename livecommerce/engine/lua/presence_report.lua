-- Race closed: a node's count written without its expiry (or the reverse) would leave a
-- count that never expires when the node dies. Uses the server clock so node clock skew
-- cannot shorten or stretch the ttl.
-- KEYS: counts (hash node -> n), expiry (zset node -> ms)   ARGV: node_id, count, ttl_ms
if tonumber(ARGV[2]) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%d', now + tonumber(ARGV[3])), ARGV[1])
-- when every node stops reporting, the keys go away on their own
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
