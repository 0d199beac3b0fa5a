-- claim.lua: lease a batch of AVAILABLE jobs to a registered node, oldest first.
--
-- KEYS[1]  P:nodes                 zset  node -> last heartbeat (server time)
-- KEYS[2]  P:jobs                  hash  id -> record (JSON)
-- KEYS[3]  P:payloads              hash  id -> payload
-- KEYS[4]  P:claimers              set   of nodes whose claim set is not empty
-- KEYS[5]  P:count:running         hash  worker -> RUNNING jobs
-- KEYS[6]  P:claims:<node>         hash  id -> worker, the jobs this node holds
-- KEYS[6 + 2i - 1]  P:available:<worker i>  zset id -> node_deaths * 2^44 + seq
-- KEYS[6 + 2i]      P:scheduled:<worker i>  zset member(seq, id) -> run_at
-- KEYS[6 + 2m + 1]  P:idle                  string, set while some node waits for work
--
-- ARGV[1]  the node id          ARGV[2]  the claim's token (fresh per call)
-- ARGV[3]  m, workers asked for ARGV[4]  how many due SCHEDULED jobs to promote per worker
--          at most in this call (bounds the script's run time; the rest wait for the next)
-- ARGV[5]  suspect_after: a job whose node died under it this many times is a suspect
-- ARGV[6]  "1" if the node runs nothing (it may take a suspect), else "0"
-- then 2 per worker (i = 1 .. m): name, how many jobs wanted (> 0)
--
-- Nothing is claimed unless the node is registered. For each worker, due SCHEDULED jobs
-- (run_at <= the server's now) become AVAILABLE at their place (see place() in
-- _common.lua). Then, if the node runs nothing, the oldest suspect of all the workers asked
-- for, if any, is leased alone. Otherwise the oldest AVAILABLE jobs that are not suspects
-- are leased: RUNNING, attempt + 1, node, token, started_at.
-- A claim that leases nothing sets P:idle (for 30 s at most: a node that died idle must not
-- leave it forever) so that the next enqueue publishes a wake-up (see enqueue.lua).
-- Returns 8 values per claimed job: id, worker, payload, attempt, enqueued_at, options
-- ("" for none), seq, 1 for a suspect (else 0).

if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {}
end
local node, token, m, promote = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local suspect_after, alone = tonumber(ARGV[5]), ARGV[6] == '1'
local t = now()
local started = fmt(t)
local out = {}
local running = {}

-- Lease these ids of "available:<worker>" (each becomes RUNNING, or is dropped from the
-- set if its record says it is not AVAILABLE), with one command per key for the whole
-- list: a command called from Lua costs about a microsecond before it does anything.
-- Returns how many were leased.
local function lease(available, worker, ids, suspect)
  if #ids == 0 then return 0 end
  call_in_chunks('ZREM', available, ids)
  local raws = hmget(KEYS[2], ids)
  local records, claims, leased, jobs = {}, {}, {}, {}
  for k = 1, #ids do
    local job = raws[k] and cjson.decode(raws[k])
    if job and job.state == 'available' then
      local id = ids[k]
      job.state = 'running'
      job.attempt = job.attempt + 1
      job.node = node
      job.token = token
      job.started_at = started
      records[#records + 1] = id
      records[#records + 1] = cjson.encode(job)
      claims[#claims + 1] = id
      claims[#claims + 1] = worker
      leased[#leased + 1] = id
      jobs[#jobs + 1] = job
    end
  end
  if #leased == 0 then return 0 end
  call_in_chunks('HSET', KEYS[2], records)
  call_in_chunks('HSET', KEYS[6], claims)
  local payloads = hmget(KEYS[3], leased)
  for k = 1, #leased do
    local job, n = jobs[k], #out
    out[n + 1] = leased[k]
    out[n + 2] = worker
    out[n + 3] = payloads[k] or ''
    out[n + 4] = job.attempt
    out[n + 5] = job.enqueued_at
    out[n + 6] = job.options or ''
    out[n + 7] = job.seq
    out[n + 8] = suspect and 1 or 0
  end
  running[worker] = (running[worker] or 0) + #leased
  return #leased
end

-- Due jobs first.
for i = 1, m do
  local available, scheduled = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', fmt(t), 'LIMIT', 0, promote)
  for _, mem in ipairs(due) do
    local id = member_id(mem)
    local job = load_job(KEYS[2], id)
    if job and job.state == 'scheduled' then
      job.state = 'available'
      save_job(KEYS[2], id, job)
      redis.call('ZADD', available, place(job), id)
    end
    redis.call('ZREM', scheduled, mem)
  end
end

-- A node that runs nothing takes the oldest suspect, alone.
local took_suspect = false
if alone then
  local best, best_i = nil, nil
  for i = 1, m do
    local available = KEYS[5 + 2 * i]
    local lo = suspect_after * LEVEL
    while true do
      local first = first_between(available, lo, math.huge)
      if not first then break end
      if not best or first[2] < best[2] then best, best_i = first, i end
      lo = (first[3] + 1) * LEVEL
    end
  end
  if best then
    took_suspect = lease(KEYS[5 + 2 * best_i], ARGV[5 + 2 * best_i], {best[1]}, true) == 1
  end
end

-- Otherwise (no suspect taken) the oldest jobs that are not suspects: level 0 (never lost
-- a node) and each level below suspect_after that has jobs, merged by seq.
for i = 1, took_suspect and 0 or m do
  local available, worker, wanted = KEYS[5 + 2 * i], ARGV[5 + 2 * i], tonumber(ARGV[6 + 2 * i])
  local got = 0
  while got < wanted do
    local picks = {}
    local lo = 0
    while lo < suspect_after * LEVEL do
      local first = first_between(available, lo, suspect_after * LEVEL)
      if not first then break end
      local level = first[3]
      local entries = redis.call('ZRANGEBYSCORE', available, string.format('%.17g', level * LEVEL),
        '(' .. string.format('%.17g', (level + 1) * LEVEL), 'WITHSCORES', 'LIMIT', 0, wanted - got)
      for e = 1, #entries, 2 do
        picks[#picks + 1] = {entries[e], tonumber(entries[e + 1]) - level * LEVEL}
      end
      lo = (level + 1) * LEVEL
    end
    if #picks == 0 then break end
    table.sort(picks, function(a, b) return a[2] < b[2] end)
    local ids = {}
    for p = 1, math.min(#picks, wanted - got) do ids[p] = picks[p][1] end
    got = got + lease(available, worker, ids, false)
  end
end
for worker, n in pairs(running) do
  incr(KEYS[5], worker, n)
end
if #out > 0 then
  redis.call('SADD', KEYS[4], node)
else
  redis.call('SET', KEYS[#KEYS], '1', 'PX', 30000)
end
return out
