-- Race closed: a room ending up in two PKs — two invites crossing each other, or one room
-- invited by two others at the same instant. Both rooms are claimed in one step.
-- KEYS: pk hash, top_a, top_b, room_a map, room_b map
-- ARGV: pk_id, room_a, room_b, mode, duration_ms, punish_ms, now, lapse_at
-- Returns the PK state, or {"error":"busy","room_id":...}
--#include _pk.lua
for i, key in ipairs({KEYS[4], KEYS[5]}) do
  if redis.call('EXISTS', key) == 1 then
    return cjson.encode({error = 'busy', room_id = ARGV[1 + i]})
  end
end
redis.call('SET', KEYS[4], ARGV[1])
redis.call('SET', KEYS[5], ARGV[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'a', ARGV[2], 'b', ARGV[3], 'mode', ARGV[4],
  'duration_ms', ARGV[5], 'punish_ms', ARGV[6], 'invited_at', ARGV[7], 'lapse_at', ARGV[8],
  'phase', 'invited')
return pk_render(true)
