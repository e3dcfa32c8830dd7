-- Race closed: a claim landing between deleting the due entry and the payload would lease
-- a timer without a payload (or leave a payload nobody can ever fire).
-- KEYS: due (zset), payload (hash), token (hash)   ARGV: name   Returns 1 if it existed.
local existed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return existed
