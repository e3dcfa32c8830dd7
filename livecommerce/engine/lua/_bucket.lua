-- Shared helpers, inlined by the Redis engine where a script says "--#include _bucket.lua".
-- Server clock, so every node refills a bucket at the same pace.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Token bucket (hash tokens, ts). Returns 0 when a token was taken, else ms until one is.
local function take_token(key, rate, burst, now)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1]) or burst
  local ts = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.max(1, math.ceil((1 - tokens) * 1000 / rate))
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', string.format('%d', now))
  -- a bucket that would be full again is the same as no bucket
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
  return wait
end
