-- release_scheduled.lua: make SCHEDULED jobs (delayed, held, waiting for a retry)
-- AVAILABLE now.
--
-- KEYS[1]  P:jobs              hash  id -> record (JSON)
-- KEYS[1 + 2i - 1]  P:available:<worker i>  zset id -> seq                  (i = 1 .. m)
-- KEYS[1 + 2i]      P:scheduled:<worker i>  zset member(seq, id) -> run_at
--
-- ARGV[1]           only jobs of this worker ("" for any)
-- ARGV[2]           m, the number of workers
-- ARGV[3 .. m + 2]  the worker names, in the order of their KEYS
-- ARGV[m + 3 ..]    the job ids
--
-- Two phases: the client first reads the ids (given, or the members of the scheduled sets)
-- and their workers to name the queues in KEYS (in chunks, each chunk one call). This
-- script checks each job again (still SCHEDULED, of the worker asked for, its queues in
-- KEYS) and skips the rest. A released job's run_at becomes the server's now and it takes
-- its own place in its worker's FIFO. Returns how many jobs it released.

local only, m = ARGV[1], tonumber(ARGV[2])
local queues = worker_keys(3, m, 1, 2)
local t = fmt(now())
local count = 0
for a = m + 3, #ARGV do
  local id = ARGV[a]
  local job = load_job(KEYS[1], id)
  if job and job.state == 'scheduled' and (only == '' or job.worker == only)
      and queues[job.worker] then
    local available = queues[job.worker]
    redis.call('ZREM', KEYS[available + 1], member(job.seq, id))
    job.state = 'available'
    job.run_at = t
    save_job(KEYS[1], id, job)
    redis.call('ZADD', KEYS[available], place(job), id)
    count = count + 1
  end
end
return count
