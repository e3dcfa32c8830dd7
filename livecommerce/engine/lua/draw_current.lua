-- KEYS: current   Returns JSON {"draw_id": id | null}: the room's open draw, if any.
local found = redis.call('GET', KEYS[1])
if not found then return '{"draw_id":null}' end
return cjson.encode({draw_id = found})
