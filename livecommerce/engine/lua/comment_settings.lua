-- Race closed: two moderators editing the banned-word list at once (read-modify-write of
-- one JSON field), and nodes caching a list without noticing it changed (version).
-- KEYS: settings (hash: slow_ms, words (JSON array), version)
-- ARGV: action ("get" | "slow" ms | "words" n_add add... remove...)
-- Returns JSON: {"slow_ms", "words", "version"}
local action = ARGV[1]
if action == 'slow' then
  redis.call('HSET', KEYS[1], 'slow_ms', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
elseif action == 'words' then
  local words = cjson.decode(redis.call('HGET', KEYS[1], 'words') or '[]')
  local set = {}
  for _, w in ipairs(words) do set[w] = true end
  local n_add = tonumber(ARGV[2])
  for i = 3, 2 + n_add do set[ARGV[i]] = true end
  for i = 3 + n_add, #ARGV do set[ARGV[i]] = nil end
  local out = {}
  for w in pairs(set) do out[#out + 1] = w end
  table.sort(out)
  redis.call('HSET', KEYS[1], 'words', #out > 0 and cjson.encode(out) or '[]')
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
local s = redis.call('HMGET', KEYS[1], 'slow_ms', 'words', 'version')
return '{"slow_ms":' .. (s[1] or '0') .. ',"words":' .. (s[2] or '[]') ..
  ',"version":' .. (s[3] or '0') .. '}'
