-- enqueue.lua: store a batch of new jobs, all of them or none.
--
-- KEYS[1]  P:jobs          hash  id -> record (JSON)
-- KEYS[2]  P:payloads      hash  id -> payload (bytes)
-- KEYS[3]  P:seq           string, the sequence counter (FIFO order of the whole queue)
-- KEYS[4]  P:workers       set   of every worker name ever enqueued
-- KEYS[4 + 2i - 1]  P:available:<worker i>   zset id -> seq
-- KEYS[4 + 2i]      P:scheduled:<worker i>   zset member(seq, id) -> run_at
-- KEYS[4 + 2m + 1]  P:idle        string, set while some node waits for work (see claim.lua)
--
-- ARGV[1]           m, the number of workers (i = 1 .. m)
-- ARGV[2 .. m + 1]  the worker names, in the order of their KEYS
-- then 6 per job:   id, worker index (1 .. m), payload, enqueued_at, run_at ("" for now;
--                   "inf" to hold), options (JSON text, "" for none)
-- last              the wake-up channel, P:wake (a pub/sub channel, not a key)
--
-- Every id is checked first: a duplicate (stored already, or twice in the batch) fails the
-- whole batch with an error reply starting "TONIQ_DUPLICATE" and nothing is written.
-- A job whose run_at is after the server's now is SCHEDULED, the others AVAILABLE.
-- If a job became AVAILABLE and P:idle exists, P:idle is deleted and "1" is published on the
-- wake-up channel, so idle nodes claim at once instead of at their next poll: one message
-- per idle spell, not one per job.
-- Returns the number of jobs stored.

local m = tonumber(ARGV[1])
local first = m + 2
local n = (#ARGV - m - 2) / 6

local seen = {}
for j = 0, n - 1 do
  local id = ARGV[first + j * 6]
  if seen[id] or redis.call('HEXISTS', KEYS[1], id) == 1 then
    return redis.error_reply('TONIQ_DUPLICATE job id ' .. id .. ' exists; nothing was stored')
  end
  seen[id] = true
end

local t = now()
local woke = false
local last = redis.call('INCRBY', KEYS[3], n)
for i = 1, m do
  redis.call('SADD', KEYS[4], ARGV[1 + i])
end
for j = 0, n - 1 do
  local a = first + j * 6
  local id, w, run_at, options = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 4], ARGV[a + 5]
  local seq = last - n + j + 1
  local job = {
    worker = ARGV[1 + w], attempt = 0, node_deaths = 0, seq = seq, enqueued_at = ARGV[a + 3],
  }
  if options ~= '' then job.options = options end
  if run_at ~= '' then job.run_at = run_at end
  if run_at ~= '' and num(run_at) > t then
    job.state = 'scheduled'
    redis.call('ZADD', KEYS[4 + 2 * w], run_at, member(seq, id))
  else
    job.state = 'available'
    redis.call('ZADD', KEYS[3 + 2 * w], seq, id)
    woke = true
  end
  save_job(KEYS[1], id, job)
  redis.call('HSET', KEYS[2], id, ARGV[a + 2])
end
if woke and redis.call('DEL', KEYS[#KEYS]) == 1 then
  redis.call('PUBLISH', ARGV[#ARGV], '1')
end
return n
