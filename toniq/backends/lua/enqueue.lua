-- enqueue.lua: store a batch of new jobs, all of them or none.
--
-- KEYS[1]  P:jobs          hash  id -> record (JSON)
-- KEYS[2]  P:payloads      hash  id -> payload (bytes)
-- KEYS[3]  P:seq           string, the sequence counter (FIFO order of the whole queue)
-- KEYS[4]  P:workers       set   of every worker name ever enqueued
-- KEYS[4 + 2i - 1]  P:available:<worker i>   zset id -> seq
-- KEYS[4 + 2i]      P:scheduled:<worker i>   zset member(seq, id) -> run_at
-- KEYS[4 + 2m + 1]  P:idle        string, set while some node waits for work (see claim.lua)
-- KEYS[4 + 2m + 2]  P:nodes       zset  node -> last heartbeat
-- KEYS[4 + 2m + 3]  P:claimers    set   of nodes whose claim set is not empty
-- KEYS[4 + 2m + 4]  P:count:running  hash  worker -> RUNNING jobs
-- KEYS[4 + 2m + 5]  P:armed       hash  node -> "<token> <until>", "<node>#slots" ->
--                                  "<token> <slots>" (see claim.lua)
-- KEYS[4 + 2m + 5 + i]  P:waiting:<worker i>  zset node -> time armed
-- and, only when a job is handed over (the one exception to "every key is in KEYS": the
-- node is picked here; both keys carry the queue's hash tag, and there is no hand-over on
-- a Redis Cluster): P:claims:<node> and P:handoff:<node> of the node it goes to.
--
-- ARGV[1]           m, the number of workers (i = 1 .. m)
-- ARGV[2 .. m + 1]  the worker names, in the order of their KEYS
-- then 6 per job:   id, worker index (1 .. m), payload, enqueued_at, run_at ("" for now;
--                   "inf" to hold), options (JSON text, "" for none)
-- next to last      the key prefix P: to hand one job over to a waiting node; "" never to
-- last              the wake-up channel, P:wake (a pub/sub channel, not a key)
--
-- Every id is checked first: a duplicate (stored already, or twice in the batch) fails the
-- whole batch with an error reply starting "TONIQ_DUPLICATE" and nothing is written.
-- A job whose run_at is after the server's now is SCHEDULED, the others AVAILABLE.
-- If a job became AVAILABLE and P:idle exists, P:idle is deleted and "1" is published on the
-- wake-up channel, so idle nodes claim at once instead of at their next poll: one message
-- per idle spell, not one per job.
-- Hand-over (one job, AVAILABLE, and a prefix given): if a node is armed for this worker
-- (it found nothing, joined P:waiting:<worker> and now blocks on P:handoff:<node>; see
-- claim.lua), is still registered and its arming has not run out, the job is leased to it
-- here, as claim.lua would (RUNNING, attempt 1, node, the armed token, started_at), and
-- pushed on P:handoff:<node> as a JSON head [id, worker, token, enqueued_at, options, seq],
-- a newline, then the payload; nothing is published. The node's arming loses a slot (at
-- the last one it is disarmed) and the node goes to the end of P:waiting:<worker>. Entries of
-- P:waiting whose node is no longer armed are dropped on the way. The list expires after
-- 10 minutes (a node that died with it: its jobs are in P:claims and are taken over).
-- Returns the number of jobs stored.

-- The error reply for the first id of a batch that is in it twice, or stored already (in
-- the "jobs" hash); nil if there is none. Checked before anything is written.
local function duplicate_of(jobs, ids)
  local seen = {}
  for _, id in ipairs(ids) do
    if seen[id] then
      return redis.error_reply('TONIQ_DUPLICATE job id ' .. id .. ' exists; nothing was stored')
    end
    seen[id] = true
  end
  local found = hmget(jobs, ids)
  for k = 1, #ids do
    if found[k] then
      return redis.error_reply('TONIQ_DUPLICATE job id ' .. ids[k] .. ' exists; nothing was stored')
    end
  end
  return nil
end

-- For jobs of one worker with these run_at and options: the worker's name in P:workers
-- (SISMEMBER first: a read, where a write called from Lua costs about 2 us), then the jobs'
-- state and the end of their record: the options and run_at, if any.
local function first_of_worker(worker, run_at, options)
  if redis.call('SISMEMBER', KEYS[4], worker) == 0 then
    redis.call('SADD', KEYS[4], worker)
  end
  local state, extra = 'available', ''
  if options ~= '' then extra = ',"options":' .. cjson.encode(options) end
  if run_at ~= '' then
    extra = extra .. ',"run_at":' .. cjson.encode(run_at)
    if num(run_at) > now() then state = 'scheduled' end
  end
  return state, extra
end

-- A batch of one worker whose jobs share their times and options (every enqueue_many call):
-- ARGV[1] "=", then the worker, enqueued_at, run_at ("" or a time; not "inf"), options
-- ("" or JSON), then 2 per job: id, payload; then the prefix (unused) and the channel. KEYS
-- as for m = 1. Half the arguments of the general form, and each record is the shared text
-- around its seq: a third of this script's time per job.
if ARGV[1] == '=' then
  local worker, at, run_at, options = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
  local n = (#ARGV - 7) / 2
  local ids = {}
  for j = 1, n do ids[j] = ARGV[4 + 2 * j] end
  local duplicate = duplicate_of(KEYS[1], ids)
  if duplicate then return duplicate end
  local last = redis.call('INCRBY', KEYS[3], n)
  local state, extra = first_of_worker(worker, run_at, options)
  local head = '{"worker":' .. cjson.encode(worker) .. ',"attempt":0,"node_deaths":0,"seq":'
  local tail = ',"enqueued_at":' .. cjson.encode(at) .. ',"state":"' .. state .. '"' .. extra
    .. '}'
  local records, zset = {}, {}
  for j = 1, n do
    -- seq as text once, for the record and the score (ZADD would format a number again)
    local id, seq = ids[j], last - n + j
    local text = string.format('%d', seq)
    records[2 * j - 1] = id
    records[2 * j] = head .. text .. tail
    if state == 'available' then
      zset[2 * j - 1] = text
      zset[2 * j] = id
    else
      zset[2 * j - 1] = run_at
      zset[2 * j] = member(seq, id)
    end
  end
  call_in_chunks('HSET', KEYS[1], records)
  -- id, payload pairs as they came, without copying them into a table: 0.2-0.45 us of
  -- about 4.5 a job (medians of 7 and 15 interleaved runs of 20 x 1,000 jobs)
  call_in_chunks('HSET', KEYS[2], ARGV, 6, 5 + 2 * n)
  if state == 'available' then
    call_in_chunks('ZADD', KEYS[5], zset)
    if redis.call('DEL', KEYS[7]) == 1 then
      redis.call('PUBLISH', ARGV[#ARGV], '1')
    end
  else
    call_in_chunks('ZADD', KEYS[6], zset)
  end
  return n
end

local m = tonumber(ARGV[1])
local first = m + 2
local n = (#ARGV - m - 3) / 6
local idle = KEYS[5 + 2 * m]

-- One job (every enqueue() call): the same steps as the batch below, without its tables,
-- closures and chunked calls, which took a third of this script's time for a single job.
if n == 1 then
  local id, run_at, options = ARGV[first], ARGV[first + 4], ARGV[first + 5]
  local w = tonumber(ARGV[first + 1])
  if redis.call('HEXISTS', KEYS[1], id) == 1 then
    return redis.error_reply('TONIQ_DUPLICATE job id ' .. id .. ' exists; nothing was stored')
  end
  local seq = redis.call('INCRBY', KEYS[3], 1)
  local state, extra = first_of_worker(ARGV[1 + w], run_at, options)
  -- A node waiting for this worker, if any: its name and the token it armed with.
  local node, token, prefix = nil, nil, ARGV[#ARGV - 1]
  local waiting = KEYS[9 + 2 * m + w]
  -- While every node is busy (none armed for this worker, none idle) one EXISTS tells so
  -- for both keys: a command called from Lua costs about a microsecond before it does
  -- anything, and this is the case of a queue under load.
  local nobody_waits = state ~= 'available' or redis.call('EXISTS', waiting, idle) == 0
  if not nobody_waits and prefix ~= '' and redis.call('EXISTS', waiting) == 1 then
    local armed = KEYS[9 + 2 * m]
    -- Peek rather than pop: the set keeps its expiry while the node stays in it.
    while true do
      local top = redis.call('ZRANGE', waiting, 0, 0)
      if #top == 0 then break end
      local cand = top[1]
      local arm = redis.call('HGET', armed, cand)
      local sp = arm and string.find(arm, ' ', 1, true)
      local t = now()
      if sp and tonumber(string.sub(arm, sp + 1)) > t
          and redis.call('ZSCORE', KEYS[6 + 2 * m], cand) then
        node, token = cand, string.sub(arm, 1, sp - 1)
        -- Its slots, "<token> <slots>" under "<node>#slots"; none (a claim.lua from before
        -- slots), or another arming's: this job is its last.
        local left, slots = 0, redis.call('HGET', armed, cand .. '#slots')
        if slots then
          local s = string.find(slots, ' ', 1, true)
          if s and string.sub(slots, 1, s - 1) == token then
            left = tonumber(string.sub(slots, s + 1)) - 1
          end
        end
        if left > 0 then
          redis.call('HSET', armed, cand .. '#slots', token .. ' ' .. left)
          redis.call('ZADD', waiting, t, cand)  -- last in line: armed nodes take turns
        else
          redis.call('HDEL', armed, cand, cand .. '#slots')
          redis.call('ZREM', waiting, cand)
        end
        break
      end
      redis.call('ZREM', waiting, cand)  -- not armed any more (ran out, or left)
      if arm then redis.call('HDEL', armed, cand, cand .. '#slots') end
    end
  end
  local worker = ARGV[1 + w]
  local head = '{"worker":' .. cjson.encode(worker) .. ',"attempt":'
  if node then
    state = 'running'
    extra = extra .. ',"node":' .. cjson.encode(node) .. ',"token":' .. cjson.encode(token)
      .. ',"started_at":' .. cjson.encode(fmt(now()))
    head = head .. '1'
  else
    head = head .. '0'
  end
  redis.call('HSET', KEYS[1], id, head .. ',"node_deaths":0,"seq":' .. string.format('%d', seq)
    .. ',"enqueued_at":' .. cjson.encode(ARGV[first + 3]) .. ',"state":"' .. state .. '"'
    .. extra .. '}')
  redis.call('HSET', KEYS[2], id, ARGV[first + 2])
  if node then
    local handoff = prefix .. 'handoff:' .. node
    redis.call('HSET', prefix .. 'claims:' .. node, id, worker)
    redis.call('SADD', KEYS[7 + 2 * m], node)
    redis.call('HINCRBY', KEYS[8 + 2 * m], worker, 1)
    redis.call('RPUSH', handoff, cjson.encode({id, worker, token, ARGV[first + 3], options,
      string.format('%d', seq)}) .. '\n' .. ARGV[first + 2])
    redis.call('PEXPIRE', handoff, 600000)
  elseif state == 'scheduled' then
    redis.call('ZADD', KEYS[4 + 2 * w], run_at, member(seq, id))
  else
    redis.call('ZADD', KEYS[3 + 2 * w], seq, id)
    if not nobody_waits and redis.call('EXISTS', idle) == 1 then  -- a read first: DEL is a write
      redis.call('DEL', idle)
      redis.call('PUBLISH', ARGV[#ARGV], '1')
    end
  end
  return 1
end

-- Every write is one command per key for the whole batch (HSET, ZADD with many pairs): a
-- command called from Lua costs about a microsecond before it does anything.
local ids = {}
for j = 0, n - 1 do ids[j + 1] = ARGV[first + j * 6] end
local duplicate = duplicate_of(KEYS[1], ids)
if duplicate then return duplicate end

-- The server's clock only for jobs that name a time; a worker's name is added to the set
-- only when new (SISMEMBER is a read; a write called from Lua costs about 2 us).
local t = nil
local woke = false
local last = redis.call('INCRBY', KEYS[3], n)
for i = 1, m do
  if redis.call('SISMEMBER', KEYS[4], ARGV[1 + i]) == 0 then
    redis.call('SADD', KEYS[4], ARGV[1 + i])
  end
end
local records, payloads, zsets, order = {}, {}, {}, {}
-- A new record is written as text rather than by cjson.encode (a third of this script's
-- time in a batch); load_job reads it like any other. Its parts repeat across a batch.
local quoted = {}
local function q(s)
  local v = quoted[s]
  if not v then
    v = cjson.encode(s)
    quoted[s] = v
  end
  return v
end
for j = 0, n - 1 do
  local a = first + j * 6
  local id, w, run_at, options = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 4], ARGV[a + 5]
  local seq = last - n + j + 1
  local state, key, score, value = 'available', KEYS[3 + 2 * w], seq, id
  if run_at ~= '' then
    t = t or now()
    if num(run_at) > t then
      state, key, score, value = 'scheduled', KEYS[4 + 2 * w], run_at, member(seq, id)
    end
  end
  if state == 'available' then woke = true end
  local z = zsets[key]
  if not z then
    z = {}
    zsets[key] = z
    order[#order + 1] = key
  end
  z[#z + 1] = score
  z[#z + 1] = value
  local extra = ''
  if options ~= '' then extra = ',"options":' .. q(options) end
  if run_at ~= '' then extra = extra .. ',"run_at":' .. q(run_at) end
  records[2 * j + 1] = id
  records[2 * j + 2] = '{"worker":' .. q(ARGV[1 + w]) .. ',"attempt":0,"node_deaths":0,"seq":'
    .. string.format('%d', seq) .. ',"enqueued_at":' .. q(ARGV[a + 3]) .. ',"state":"' .. state
    .. '"' .. extra .. '}'
  payloads[2 * j + 1] = id
  payloads[2 * j + 2] = ARGV[a + 2]
end
call_in_chunks('HSET', KEYS[1], records)
call_in_chunks('HSET', KEYS[2], payloads)
for _, key in ipairs(order) do
  call_in_chunks('ZADD', key, zsets[key])
end
if woke and redis.call('DEL', idle) == 1 then
  redis.call('PUBLISH', ARGV[#ARGV], '1')
end
return n
