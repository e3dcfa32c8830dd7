-- Race closed: a node finishing the old run of a timer while it is being re-scheduled.
-- Dropping the lease token here makes that node's ack (timer_done) leave the new schedule
-- alone; due time and payload change together so no node claims a half-written timer.
-- KEYS: due (zset), payload (hash), token (hash)   ARGV: name, at_ms, payload_json
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
