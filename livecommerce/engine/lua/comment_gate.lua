-- Races closed: a retried request_id posting twice (two nodes, or a retry racing the
-- original), and a mute or slow-mode interval set on one node being missed by a comment
-- checked on another. Every check and the idempotency record are one step.
-- KEYS: idem, mute (string: until ms), settings (hash: slow_ms), slow_user, bucket,
--   draw (string: the room's open draw, read here so a keyword entry needs no extra trip)
-- ARGV: comment_id, idem_ttl_ms, exempt ("1"/"0"), rate_per_s, burst, has_idem ("1"/"0")
-- Returns JSON: {"ok":true,"draw"?:id} | {"dup":"<id>"} | {"error":"muted","until":ms}
--   | {"error":"rate_limited","retry_after_ms":ms,"reason"?:"slow_mode"}
--#include _bucket.lua
if ARGV[6] == '1' then
  local prior = redis.call('GET', KEYS[1])
  if prior then return cjson.encode({dup = prior}) end
end
if ARGV[3] ~= '1' then
  local now = server_ms()
  local muted_until = tonumber(redis.call('GET', KEYS[2]) or '0')
  if muted_until > now then
    return cjson.encode({error = 'muted', ['until'] = muted_until})
  end
  local slow = tonumber(redis.call('HGET', KEYS[3], 'slow_ms') or '0')
  if slow > 0 then
    local left = redis.call('PTTL', KEYS[4])
    if left > 0 then
      return cjson.encode({error = 'rate_limited', retry_after_ms = left, reason = 'slow_mode'})
    end
  end
  local wait = take_token(KEYS[5], tonumber(ARGV[4]), tonumber(ARGV[5]), now)
  if wait > 0 then return cjson.encode({error = 'rate_limited', retry_after_ms = wait}) end
  if slow > 0 then redis.call('SET', KEYS[4], '1', 'PX', slow) end
end
if ARGV[6] == '1' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
local draw = redis.call('GET', KEYS[6])
if draw then return cjson.encode({ok = true, draw = draw}) end
return '{"ok":true}'
