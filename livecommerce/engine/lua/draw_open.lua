-- Race closed: two draws started in one room at once (two hosts' clicks, two nodes).
-- KEYS: current (string: the open draw's id), state (hash)
-- ARGV: draw_id, ends_at, current_ttl_ms
-- Returns JSON {"ok":true} | {"error":"busy","draw_id":...}
local current = redis.call('GET', KEYS[1])
if current then return cjson.encode({error = 'busy', draw_id = current}) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], 'status', 'open', 'ends_at', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return '{"ok":true}'
