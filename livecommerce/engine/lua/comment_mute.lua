-- Mutes live in the room's slot so comment_gate.lua sees them on every node.
-- KEYS: mute   ARGV: until_ms, ttl_ms ("0": unmute; "-1": only read)
-- Returns JSON: {"until": ms|0} (the mute in force after the call)
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
elseif ttl == 0 then
  redis.call('DEL', KEYS[1])
end
return '{"until":' .. (redis.call('GET', KEYS[1]) or '0') .. '}'
