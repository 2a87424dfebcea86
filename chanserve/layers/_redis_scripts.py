"""
The Lua scripts of the Redis layer: each send, group send and batch pop is
one atomic server-side step.

Keys (``P`` is the layer's prefix plus ``:``):

- ``P c:<channel>``: the list of a normal channel's messages; for
  process-specific channels, one list per process prefix (``P c:abc!``);
- ``P n:<prefix!>``: a hash counting each process-specific channel's queued
  messages (its capacity is per channel, like any channel's);
- ``P g:<group>``: a sorted set of member channels scored by the time of
  their last ``group_add``.

A message in a list is an envelope: ``>dH`` (expires-at, name length), the
channel name, then the (msgpack, maybe encrypted) payload.
"""

from ._redis_connection import LuaScript

_PRELUDE = """
local now = tonumber(ARGV[1])

local function unpack_name(envelope)
  local length = struct.unpack('>H', envelope, 9)
  return string.sub(envelope, 11, 10 + length)
end

local function decrement(counts, name)
  if redis.call('HINCRBY', counts, name, -1) <= 0 then
    redis.call('HDEL', counts, name)
  end
end

-- channels whose messages expired unread (they leave the groups sent to)
local stale = {}

-- drop expired messages at the head of a list; return how many
local function purge(list, counts)
  local n = 0
  while true do
    local head = redis.call('LINDEX', list, 0)
    if not head then break end
    if struct.unpack('>d', head) > now then break end
    redis.call('LPOP', list)
    n = n + 1
    local name = unpack_name(head)
    stale[name] = true
    if counts then decrement(counts, name) end
  end
  return n
end

local function stale_names()
  local out = {}
  for name in pairs(stale) do out[#out + 1] = name end
  return out
end

-- append one envelope unless the channel is full; return ok (0/1), expired
local function push(list, counts, name, envelope, capacity, ttl)
  local expired = purge(list, counts)
  local depth
  if counts then
    depth = tonumber(redis.call('HGET', counts, name) or '0')
  else
    depth = redis.call('LLEN', list)
  end
  if depth >= capacity then return 0, expired end
  redis.call('RPUSH', list, envelope)
  redis.call('EXPIRE', list, ttl)
  if counts then
    redis.call('HINCRBY', counts, name, 1)
    redis.call('EXPIRE', counts, ttl)
  end
  return 1, expired
end
"""

#: KEYS: list [, counts]; ARGV: now, envelope, capacity, ttl, name -> {ok, expired}
SEND = LuaScript(_PRELUDE + """
local ok, expired = push(KEYS[1], KEYS[2], ARGV[5], ARGV[2], tonumber(ARGV[3]), ARGV[4])
return {ok, expired}
""")

#: KEYS: list, counts of each member (counts only for process-specific ones);
#: ARGV: now, payload, expires_at, ttl, then (name, capacity, has_counts) per member
#: -> {delivered, {full names}, expired, {names whose messages expired}}
GROUP_PUSH = LuaScript(_PRELUDE + """
local payload, expires_at, ttl = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local delivered, full, expired = 0, {}, 0
local k = 1
for i = 5, #ARGV, 3 do
  local name, capacity = ARGV[i], tonumber(ARGV[i + 1])
  local list, counts = KEYS[k], nil
  k = k + 1
  if ARGV[i + 2] == '1' then counts = KEYS[k]; k = k + 1 end
  local envelope = struct.pack('>dH', expires_at, #name) .. name .. payload
  local ok, e = push(list, counts, name, envelope, capacity, ttl)
  expired = expired + e
  if ok == 1 then delivered = delivered + 1 else full[#full + 1] = name end
end
return {delivered, full, expired, stale_names()}
""")

#: One shard, one capacity for all: membership and pushes in one step.
#: Channels whose messages expired unread leave the group.
#: KEYS: group; ARGV: now, payload, expires_at, ttl, cutoff, capacity, key prefix
#: -> {delivered, {full names}, expired, {names that left the group}}
GROUP_SEND_ALL = LuaScript(_PRELUDE + """
local payload, expires_at, ttl = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local capacity, p = tonumber(ARGV[6]), ARGV[7]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[5])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local delivered, full, expired = 0, {}, 0
for _, name in ipairs(members) do
  local bang = string.find(name, '!', 1, true)
  local list, counts
  if bang then
    local prefix = string.sub(name, 1, bang)
    list, counts = p .. 'c:' .. prefix, p .. 'n:' .. prefix
  else
    list = p .. 'c:' .. name
  end
  local envelope = struct.pack('>dH', expires_at, #name) .. name .. payload
  local ok, e = push(list, counts, name, envelope, capacity, ttl)
  expired = expired + e
  if ok == 1 then delivered = delivered + 1 else full[#full + 1] = name end
end
local left = stale_names()
for i = 1, #left, 500 do
  redis.call('ZREM', KEYS[1], unpack(left, i, math.min(i + 499, #left)))
end
return {delivered, full, expired, left}
""")

#: KEYS: group; ARGV: now, cutoff -> live member names
GROUP_MEMBERS = LuaScript("""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
return redis.call('ZRANGE', KEYS[1], 0, -1)
""")

#: KEYS: group; ARGV: now, channel, ttl
GROUP_ADD = LuaScript("""
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
""")

#: Pop up to ARGV[2] envelopes of a process prefix list and decrement their
#: channels' counts, after decrementing those of the names in ARGV[3..]
#: (messages already taken by BLPOP). KEYS: list, counts; ARGV: now, n, names...
POP_BATCH = LuaScript(_PRELUDE + """
for i = 3, #ARGV do decrement(KEYS[2], ARGV[i]) end
local out = {}
for i = 1, tonumber(ARGV[2]) do
  local envelope = redis.call('LPOP', KEYS[1])
  if not envelope then break end
  decrement(KEYS[2], unpack_name(envelope))
  out[#out + 1] = envelope
end
return out
""")

#: ARGV: key pattern -> number of keys deleted
FLUSH = LuaScript("""
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 500 do
  redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))
end
return #keys
""")

#: ARGV: key pattern of channel lists, length of the prefix before the
#: channel name, counts key prefix -> flat {channel, depth, ...}
DEPTHS = LuaScript("""
local out = {}
local skip = tonumber(ARGV[2])
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  local name = string.sub(key, skip + 1)
  if string.sub(name, -1) == '!' then
    local counts = redis.call('HGETALL', ARGV[3] .. name)
    for i = 1, #counts, 2 do
      out[#out + 1] = counts[i]
      out[#out + 1] = counts[i + 1]
    end
  else
    out[#out + 1] = name
    out[#out + 1] = tostring(redis.call('LLEN', key))
  end
end
return out
""")

ALL = (SEND, GROUP_PUSH, GROUP_SEND_ALL, GROUP_MEMBERS, GROUP_ADD, POP_BATCH, FLUSH, DEPTHS)
