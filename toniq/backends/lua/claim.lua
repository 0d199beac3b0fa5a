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
-- KEYS[6 + 2m + 1]  P:armed                 hash  node -> "<token> <until>" and
--                                          "<node>#slots" -> "<token> <slots>": nodes waiting
--                                          for a job handed over (see enqueue.lua)
-- KEYS[6 + 2m + 2]  P:handoff:<node>        list  the jobs enqueue.lua handed this node
-- KEYS[6 + 2m + 2 + i]  P:waiting:<worker i>  zset node -> time armed
-- then     P:waiting:<w> of each of the node's other workers (no room now): it leaves them
-- last     P:idle                  string, set while some node waits for work
--
-- ARGV[1]  the node id          ARGV[2]  the claim's token (fresh per call)
-- ARGV[3]  m, workers asked for ARGV[4]  how many due SCHEDULED jobs to promote per worker
--          at most in this call (bounds the script's run time; the rest wait for the next)
-- ARGV[5]  suspect_after: a job whose node died under it this many times is a suspect
-- ARGV[6]  "1" if the node runs nothing (it may take a suspect), else "0"
-- then 2 per worker (i = 1 .. m): name, how many jobs wanted (> 0)
-- last     arm: "" or "<seconds> <slots>"; if this claim leases nothing, the node waits for
--          up to that many jobs handed over (blocked on P:handoff:<node>), for at most that
--          long
--
-- Nothing is claimed unless the node is registered. For each worker, due SCHEDULED jobs
-- (run_at <= the server's now) become AVAILABLE at their place (see place() in
-- _common.lua). Then, if the node runs nothing, the oldest suspect of all the workers asked
-- for, if any, is leased alone. Otherwise the oldest AVAILABLE jobs that are not suspects
-- are leased: RUNNING, attempt + 1, node, token, started_at.
-- A claim that leases nothing sets P:idle (for 30 s at most: a node that died idle must not
-- leave it forever) so that the next enqueue publishes a wake-up (see enqueue.lua); with
-- "arm", it also arms the node: P:armed holds its token, now + arm and its slots, and it
-- joins P:waiting of each worker asked for (both keys expire a second after that), so the
-- next enqueues of them (up to <slots> jobs) lease each job to it and push it on
-- P:handoff:<node>, where the node waits (BLPOP), also while it runs the jobs handed
-- before: no claim round trip.
-- Every claim first disarms the node and takes what is left on P:handoff:<node> (a job
-- handed over after the node stopped waiting): each is returned if it is still RUNNING
-- under this node and the token it was handed with; wake-up markers ("~") are dropped.
-- Returns 9 values per claimed job: id, worker, payload, attempt, enqueued_at, options
-- ("" for none), seq, 1 for a suspect (else 0), the claim's token.

if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {}
end
local node, token, m, promote = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local suspect_after, alone = tonumber(ARGV[5]), ARGV[6] == '1'
local t = now()
local started = fmt(t)
local out = {}
local running = {}
local armed, handoff = KEYS[6 + 2 * m + 1], KEYS[6 + 2 * m + 2]

-- A record as enqueue.lua writes it for a job that never ran and has no options or run_at
-- (most jobs): its worker (as JSON), seq and enqueued_at. Such a record is leased by writing
-- it again in the same layout, rather than by cjson.decode and encode (which took a third of
-- this script's time per job); any other record takes the general path.
local FRESH = '^{"worker":("[^"\\]*"),"attempt":0,"node_deaths":0,"seq":(%d+),'
  .. '"enqueued_at":"([^"\\]*)","state":"available"}$'
local running_tail = ',"state":"running","node":' .. cjson.encode(node) .. ',"token":'
  .. cjson.encode(token) .. ',"started_at":' .. cjson.encode(started) .. '}'

-- Disarm, then take the jobs handed over since the last claim.
redis.call('HDEL', armed, node, node .. '#slots')
-- P:waiting of the node's workers not asked for (KEYS between the asked ones and P:idle):
-- an entry left there by an earlier arming must not hand it a job it has no room for.
for k = 6 + 3 * m + 3, #KEYS - 1 do
  redis.call('ZREM', KEYS[k], node)
end
local taken = {}
for _, h in ipairs(take_handed(handoff, KEYS[2], node)) do
  local id, job, n = h[1], h[2], #out
  out[n + 1] = id
  out[n + 2] = job.worker
  out[n + 3] = h[4]
  out[n + 4] = job.attempt
  out[n + 5] = job.enqueued_at
  out[n + 6] = job.options or ''
  out[n + 7] = job.seq
  out[n + 8] = 0
  out[n + 9] = h[3]
  taken[job.worker] = (taken[job.worker] or 0) + 1
end
if #out > 0 then alone = false end  -- a suspect runs alone

-- Lease these ids of "available:<worker>" (each becomes RUNNING, or is dropped from the
-- set if its record says it is not AVAILABLE), with one command per key for the whole
-- list: a command called from Lua costs about a microsecond before it does anything.
-- Returns how many were leased.
local function lease(available, worker, ids, suspect)
  if #ids == 0 then return 0 end
  call_in_chunks('ZREM', available, ids)
  local raws = hmget(KEYS[2], ids)
  local records, claims, leased = {}, {}, {}
  local attempts, ats, options, seqs = {}, {}, {}, {}
  for k = 1, #ids do
    local raw, record = raws[k], nil
    local n = #leased + 1
    local quoted, seq, at = nil, nil, nil
    if raw then quoted, seq, at = string.match(raw, FRESH) end
    if quoted then
      record = '{"worker":' .. quoted .. ',"attempt":1,"node_deaths":0,"seq":' .. seq
        .. ',"enqueued_at":"' .. at .. '"' .. running_tail
      attempts[n], ats[n], options[n], seqs[n] = 1, at, '', seq
    else
      local job = raw and cjson.decode(raw)
      if job and job.state == 'available' then
        job.state = 'running'
        job.attempt = job.attempt + 1
        job.node = node
        job.token = token
        job.started_at = started
        record = cjson.encode(job)
        attempts[n], ats[n], options[n], seqs[n] = job.attempt, job.enqueued_at,
          job.options or '', job.seq
      end
    end
    if record then
      local id = ids[k]
      records[#records + 1] = id
      records[#records + 1] = record
      claims[#claims + 1] = id
      claims[#claims + 1] = worker
      leased[n] = id
    end
  end
  if #leased == 0 then return 0 end
  call_in_chunks('HSET', KEYS[2], records)
  hset_many(KEYS[6], claims)
  local payloads = hmget(KEYS[3], leased)
  for k = 1, #leased do
    local n = #out
    out[n + 1] = leased[k]
    out[n + 2] = worker
    out[n + 3] = payloads[k] or ''
    out[n + 4] = attempts[k]
    out[n + 5] = ats[k]
    out[n + 6] = options[k]
    out[n + 7] = seqs[k]
    out[n + 8] = suspect and 1 or 0
    out[n + 9] = token
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
  local available, worker = KEYS[5 + 2 * i], ARGV[5 + 2 * i]
  local wanted = tonumber(ARGV[6 + 2 * i]) - (taken[worker] or 0)
  local got = 0
  while got < wanted do
    -- The oldest entries of each level below suspect_after, merged by seq. Usually one
    -- level has any: its entries are in order already, and are taken without the merge
    -- (a table per entry and a sort: a sixth of this script's time).
    local levels = {}
    local lo = 0
    while lo < suspect_after * LEVEL do
      local first = first_between(available, lo, suspect_after * LEVEL)
      if not first then break end
      local level = first[3]
      levels[#levels + 1] = {level, redis.call('ZRANGEBYSCORE', available,
        string.format('%.17g', level * LEVEL), '(' .. string.format('%.17g', (level + 1) * LEVEL),
        'WITHSCORES', 'LIMIT', 0, wanted - got)}
      lo = (level + 1) * LEVEL
    end
    if #levels == 0 then break end
    local ids = {}
    if #levels == 1 then
      local entries = levels[1][2]
      for e = 1, #entries, 2 do ids[#ids + 1] = entries[e] end
    else
      local picks = {}
      for _, l in ipairs(levels) do
        local level, entries = l[1], l[2]
        for e = 1, #entries, 2 do
          picks[#picks + 1] = {entries[e], tonumber(entries[e + 1]) - level * LEVEL}
        end
      end
      table.sort(picks, function(a, b) return a[2] < b[2] end)
      for p = 1, math.min(#picks, wanted - got) do ids[p] = picks[p][1] end
    end
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
  local arm, slots = string.match(ARGV[#ARGV], '^(%S+) (%d+)$')
  if arm then
    -- The keys expire a second after the arming: a node that died armed leaves nothing.
    arm = tonumber(arm)
    local ttl = math.ceil((arm + 1) * 1000)
    -- The slots apart: an enqueue.lua from before them reads "<token> <until>".
    redis.call('HSET', armed, node, token .. ' ' .. fmt(t + arm), node .. '#slots',
      token .. ' ' .. slots)
    redis.call('PEXPIRE', armed, ttl)
    for i = 1, m do
      redis.call('ZADD', KEYS[6 + 2 * m + 2 + i], t, node)
      redis.call('PEXPIRE', KEYS[6 + 2 * m + 2 + i], ttl)
    end
  end
end
return out
