-- heartbeat.lua: renew a node's lease, if the node is still registered.
--
-- KEYS[1]  P:nodes      zset  node -> last heartbeat (server time)
--
-- ARGV[1]  the node id
--
-- Returns 1, or 0 if the node is unknown (it was taken over or unregistered: it must
-- register again before it claims).

if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], fmt(now()), ARGV[1])
return 1
