-- Shared by the pk_*.lua scripts (inlined with --#include): a PK's state as JSON.
-- KEYS[1] is always the PK hash; KEYS[2], KEYS[3] the two rooms' contribution zsets.
local function pk_render(changed)
  local h = redis.call('HGETALL', KEYS[1])
  if #h == 0 then return '{"error":"not_found"}' end
  local s = {}
  for i = 1, #h, 2 do s[h[i]] = h[i + 1] end
  local function top(key)
    local flat = redis.call('ZREVRANGE', key, 0, 2, 'WITHSCORES')
    local out = {}
    for i = 1, #flat, 2 do out[#out + 1] = {flat[i], tonumber(flat[i + 1])} end
    return out
  end
  local state = {
    id = s.id, a = s.a, b = s.b, mode = s.mode, phase = s.phase,
    duration_ms = tonumber(s.duration_ms), punish_ms = tonumber(s.punish_ms),
    invited_at = tonumber(s.invited_at), lapse_at = tonumber(s.lapse_at),
    started_at = tonumber(s.started_at or '0'), ends_at = tonumber(s.ends_at or '0'),
    ended_at = tonumber(s.ended_at or '0'), punish_until = tonumber(s.punish_until or '0'),
    score_a = tonumber(s.score_a or '0'), score_b = tonumber(s.score_b or '0'),
    winner = s.winner or '', changed = changed,
  }
  local out = cjson.encode(state)
  -- cjson turns an empty table into {}: splice the top lists in as arrays ourselves.
  local ta, tb = top(KEYS[2]), top(KEYS[3])
  local function arr(t) if #t == 0 then return '[]' end return cjson.encode(t) end
  return string.sub(out, 1, -2) .. ',"top_a":' .. arr(ta) .. ',"top_b":' .. arr(tb) .. '}'
end
