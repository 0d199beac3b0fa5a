-- retry_failed.lua: make FAILED jobs AVAILABLE again with a fresh attempt count.
--
-- KEYS[1]  P:jobs              hash  id -> record (JSON)
-- KEYS[2]  P:failed            zset  member(seq, id) -> finished_at
-- KEYS[3]  P:count:failed      hash  worker -> FAILED jobs
-- KEYS[3 + i]  P:available:<worker i>  zset id -> seq   (i = 1 .. m)
--
-- ARGV[1]           only jobs of this worker ("" for any)
-- ARGV[2]           m, the number of workers
-- ARGV[3 .. m + 2]  the worker names, in the order of their KEYS
-- ARGV[m + 3 ..]    the job ids
--
-- Two phases: the client first reads the ids (given, or all of P:failed) and their records
-- to name their workers' queues in KEYS (in chunks, each chunk one call). This script
-- checks each job again (still FAILED, of the worker asked for, its queue in KEYS) and
-- skips the rest. Errors are kept; attempt and node_deaths start again from 0; the job
-- goes back to its own place in its worker's FIFO. Returns how many jobs it retried.

local only, m = ARGV[1], tonumber(ARGV[2])
local queues = worker_keys(3, m, 3, 1)
local count = 0
for a = m + 3, #ARGV do
  local id = ARGV[a]
  local job = load_job(KEYS[1], id)
  if job and job.state == 'failed' and (only == '' or job.worker == only)
      and queues[job.worker] then
    redis.call('ZREM', KEYS[2], member(job.seq, id))
    job.state = 'available'
    job.attempt = 0
    job.node_deaths = 0
    job.finished_at = nil
    job.run_at = nil
    save_job(KEYS[1], id, job)
    redis.call('ZADD', KEYS[queues[job.worker]], place(job), id)
    decr(KEYS[3], job.worker, 1)
    count = count + 1
  end
end
return count
