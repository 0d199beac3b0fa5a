-- prune_failed.lua: delete FAILED jobs past the retention limits.
--
-- KEYS[1]  P:jobs              hash  id -> record (JSON)
-- KEYS[2]  P:payloads          hash  id -> payload
-- KEYS[3]  P:errors            hash  id -> JSON list of errors
-- KEYS[4]  P:failed            zset  member(seq, id) -> finished_at
-- KEYS[5]  P:count:failed      hash  worker -> FAILED jobs
--
-- ARGV[1]  max_count: keep at most this many FAILED jobs (the newest)
-- ARGV[2]  max_age: delete those that failed more than this many seconds before the
--          server's now
-- ARGV[3]  the most jobs to delete in one call (the client calls again while a call
--          deletes that many)
--
-- Deletes the jobs older than max_age first, then the oldest beyond max_count (ties in
-- finished_at go by seq, as P:failed's members start with it). Returns how many it deleted.

local max_count, max_age, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cutoff = now() - max_age
local doomed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. fmt(cutoff), 'LIMIT', 0, limit)
local room = limit - #doomed
local excess = redis.call('ZCARD', KEYS[4]) - #doomed - max_count
if room > 0 and excess > 0 then
  local n = math.min(room, excess)
  for _, mem in ipairs(redis.call('ZRANGE', KEYS[4], #doomed, #doomed + n - 1)) do
    doomed[#doomed + 1] = mem
  end
end
for _, mem in ipairs(doomed) do
  local id = member_id(mem)
  local job = load_job(KEYS[1], id)
  redis.call('ZREM', KEYS[4], mem)
  if job and job.state == 'failed' then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    decr(KEYS[5], job.worker, 1)
  end
end
return #doomed
