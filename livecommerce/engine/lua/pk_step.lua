-- Races closed: accept racing the lapse timer or a decline; pk:end racing the end timer
-- (settled twice, or with different scores); a score landing after the fight ended.
-- Every phase change is one step that reads the phase first; each returns changed=true
-- to exactly one caller, who announces and persists it.
-- KEYS: pk hash, top_a, top_b, room_a map, room_b map
-- ARGV: action (accept|decline|lapse|end|finish), now
-- Returns the PK state with "changed", or {"error":...}
--#include _pk.lua
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return '{"error":"not_found"}' end
local action, now = ARGV[1], tonumber(ARGV[2])
local id = redis.call('HGET', KEYS[1], 'id')
local function release()  -- free both rooms, unless one is already in a newer PK
  if redis.call('GET', KEYS[4]) == id then redis.call('DEL', KEYS[4]) end
  if redis.call('GET', KEYS[5]) == id then redis.call('DEL', KEYS[5]) end
end
if action == 'accept' or action == 'decline' or action == 'lapse' then
  if phase ~= 'invited' then return pk_render(false) end
  local lapse_at = tonumber(redis.call('HGET', KEYS[1], 'lapse_at'))
  if action == 'lapse' or now >= lapse_at then
    if action ~= 'lapse' and now < lapse_at then return pk_render(false) end
    redis.call('HSET', KEYS[1], 'phase', 'lapsed', 'ended_at', now)
    release()
    return pk_render(true)
  end
  if action == 'decline' then
    redis.call('HSET', KEYS[1], 'phase', 'declined', 'ended_at', now)
    release()
    return pk_render(true)
  end
  local duration = tonumber(redis.call('HGET', KEYS[1], 'duration_ms'))
  redis.call('HSET', KEYS[1], 'phase', 'fighting', 'started_at', now, 'ends_at', now + duration)
  return pk_render(true)
end
if action == 'end' then
  if phase ~= 'fighting' then return pk_render(false) end
  local ends_at = tonumber(redis.call('HGET', KEYS[1], 'ends_at'))
  local at = math.min(now, ends_at)
  local sa = tonumber(redis.call('HGET', KEYS[1], 'score_a') or '0')
  local sb = tonumber(redis.call('HGET', KEYS[1], 'score_b') or '0')
  local winner = ''
  if sa > sb then winner = redis.call('HGET', KEYS[1], 'a') end
  if sb > sa then winner = redis.call('HGET', KEYS[1], 'b') end
  local punish = tonumber(redis.call('HGET', KEYS[1], 'punish_ms'))
  redis.call('HSET', KEYS[1], 'phase', 'punishing', 'ended_at', at, 'winner', winner,
    'punish_until', now + punish, 'score_a', sa, 'score_b', sb)
  return pk_render(true)
end
if action == 'finish' then
  if phase ~= 'punishing' then return pk_render(false) end
  redis.call('HSET', KEYS[1], 'phase', 'ended')
  release()
  return pk_render(true)
end
return '{"error":"invalid"}'
