-- Who is in the room while a draw is open: each node adds its signed-in viewers of the
-- room with an expiry; a viewer whose nodes stopped reporting them falls out.
-- KEYS: here (zset user -> expiry ms)   ARGV: now, expiry, user_id...
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], 3600000)
return '1'
