-- Race closed: a handler that runs longer than its lease (a slow database) being claimed
-- and fired a second time by another node. The holder renews its lease while it works;
-- only the current token may renew, so a lease already lost stays lost.
-- KEYS: due (zset), payload (hash), token (hash)   ARGV: name, token, until_ms
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
