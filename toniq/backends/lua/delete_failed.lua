-- delete_failed.lua: delete FAILED jobs.
--
-- KEYS[1]  P:jobs              hash  id -> record (JSON)
-- KEYS[2]  P:payloads          hash  id -> payload
-- KEYS[3]  P:errors            hash  id -> JSON list of errors
-- KEYS[4]  P:failed            zset  member(seq, id) -> finished_at
-- KEYS[5]  P:count:failed      hash  worker -> FAILED jobs
--
-- ARGV[1]       only jobs of this worker ("" for any)
-- ARGV[2 ..]    the job ids
--
-- The client names the ids (given, or all of P:failed, in chunks). This script checks each
-- job again (still FAILED, of the worker asked for) and skips the rest.
-- Returns how many jobs it deleted.

local only = ARGV[1]
local count = 0
for a = 2, #ARGV do
  local id = ARGV[a]
  local job = load_job(KEYS[1], id)
  if job and job.state == 'failed' and (only == '' or job.worker == only) then
    redis.call('ZREM', KEYS[4], member(job.seq, id))
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    decr(KEYS[5], job.worker, 1)
    count = count + 1
  end
end
return count
