-- KEYS: room map   Returns JSON {"pk_id": id | null}
local found = redis.call('GET', KEYS[1])
if not found then return '{"pk_id":null}' end
return cjson.encode({pk_id = found})
