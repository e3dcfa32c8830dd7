-- Race closed: a retried request checking for its idempotency record while the first
-- attempt stores it; both would think they were first. Set-if-absent and read are one step.
-- KEYS: record   ARGV: value, ttl_ms
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
