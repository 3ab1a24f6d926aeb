-- cdcd's read-through fill for caches that `type: redis` sinks invalidate with a `fence`
-- (docs/sinks/redis.md). Use it instead of a bare GET/SET so that a value read from the database
-- before an invalidation can never be written after it.
--
-- KEYS[1]: the cache key; KEYS[2]: its fence key: "cdcd:fence:{" .. key .. "}", or
-- "cdcd:fence:" .. key when the key holds '{' or '}' (so both share a Redis Cluster slot).
--
-- EVALSHA sha 2 key fence get
--   -> {1, value} on a hit; on a miss {0, token}. Take the token BEFORE reading the database.
-- EVALSHA sha 2 key fence set token value ttl_ms
--   -> 1 when the value was stored; 0 when an invalidation came after the token was taken (the
--      value may be stale: do not cache it; serve it or read again).
local op = ARGV[1]
if op == 'get' then
  local value = redis.call('GET', KEYS[1])
  if value then
    return {1, value}
  end
  return {0, redis.call('GET', KEYS[2]) or ''}
elseif op == 'set' then
  if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then
    return 0
  end
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  return 1
end
return redis.error_reply('cdcd_fill: expected get or set, got ' .. tostring(op))
