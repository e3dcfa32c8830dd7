-- Race closed: a purchase or like counted after the fight ended (or after pk:end), which
-- would make the two rooms' final scores disagree with what was announced.
-- KEYS: pk hash, top (zset of this room)   ARGV: room_id, user_id, amount, now
-- Returns JSON {"counted": bool}
local s = redis.call('HMGET', KEYS[1], 'phase', 'ends_at', 'a', 'b')
if s[1] ~= 'fighting' or tonumber(ARGV[4]) >= tonumber(s[2]) then return '{"counted":false}' end
local field
if ARGV[1] == s[3] then field = 'score_a' elseif ARGV[1] == s[4] then field = 'score_b' end
if not field then return '{"counted":false}' end
redis.call('HINCRBY', KEYS[1], field, ARGV[3])
redis.call('ZINCRBY', KEYS[2], ARGV[3], ARGV[2])
return '{"counted":true}'
