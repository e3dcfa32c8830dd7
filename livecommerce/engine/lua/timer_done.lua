-- Race closed: a slow node acking a timer whose lease lapsed and that another node has
-- re-claimed (or that was re-scheduled): only the current lease holder may delete it.
-- KEYS: due (zset), payload (hash), token (hash)   ARGV: name, token
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
