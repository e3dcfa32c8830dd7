-- Race closed: reading seq, floor and history at different moments. A publish in between
-- could trim entries after we judged the history complete, or add a seq we then miss.
-- KEYS: seq, hist, hist_floor   ARGV: since_seq
-- Returns false when the gap cannot be filled, else the envelopes with seq > since_seq.
local since = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(redis.call('GET', KEYS[3]) or '0')
if since > last or since + 1 < floor then
  return false
end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
local first = #items + 1
while first > 1 and tonumber(string.match(items[first - 1], '^(%d+)')) > since do
  first = first - 1
end
local out = {}
for i = first, #items do
  out[#out + 1] = items[i]
end
return out
