--- Per-call soft limits, enforced inside Lua (sandbox-research.md, 1.1 and 4.1 point 7).
--
-- Every call and load runs in a fresh coroutine with a count hook. Every HOOK_PERIOD instructions the
-- hook compares the CPU time (os.clock) with the call's deadline, and the heap (collectgarbage
-- "count") with the memory cap. On a breach the call is killed: it fails with "cpu time limit
-- exceeded" or "memory limit exceeded", the process and the scripts' globals live on.
--
-- A plain hook has three holes, closed here:
--   * the script's pcall swallows the error: once a call is killed, the hook fires at every
--     instruction of each thread it reaches (Redis's trick), and the sandbox's pcall, xpcall and
--     coroutine functions re-raise the kill;
--   * Lua runs an xpcall handler with hooks off when the error comes from a hook, so a looping
--     handler would never stop: xpcall is built on pcall, its handler runs after the unwinding;
--   * hooks belong to threads: each coroutine a script creates gets the hook.
-- Work inside one C function (a pathological string.find) is out of reach of any hook: the broker's
-- hard deadline kills the process then.
--
-- The hook alone misses memory that a short call allocates between two checks and keeps in a
-- global: the heap is also checked at every built-in call, and at the end of every call. A call that
-- ends with the heap still over the cap (after a full collection, so only what the scripts keep
-- counts) fails, and the broker is told to restart the process.
--
-- Calls nest: the broker may send a call while a built-in waits for its reply. Each call has its own
-- deadline, and the CPU time of a nested call is not billed to the call it interrupted.

local clock = os.clock
local collectgarbage = collectgarbage
local co_close, co_create, co_resume, co_status = coroutine.close, coroutine.create, coroutine.resume,
                                                  coroutine.status
local gethook, sethook = debug.gethook, debug.sethook
local byte, format, sub = string.byte, string.format, string.sub
local error, pcall, tostring, type = error, pcall, tostring, type

--- Instructions between two checks. Enabling a count hook slows Lua down at any period, and reading
-- the CPU clock costs about a microsecond: at 10 000 the checks themselves cost a few percent.
local HOOK_PERIOD = 10000
--- Longest error text sent back; a longer one is cut at a character boundary.
local MAX_ERROR_BYTES = 64 * 1024

local limits = {}

local memory_kb  -- see limits.configure
--- The running calls, innermost last: { budget, deadline, killed, reason } (and per-call counters
-- other modules keep, see `limits.current`).
local calls = {}

--- `memory_kb`: the soft cap on the Lua heap, in KiB.
function limits.configure(options)
  memory_kb = options.memory_kb
end

--- The KiB the heap holds over the cap, less `spare_kb`, or nil when under it. Garbage counts in
-- collectgarbage("count"), so a full collection decides.
local function over_memory(spare_kb)
  if collectgarbage("count") - spare_kb > memory_kb then
    collectgarbage("collect")
    local held = collectgarbage("count") - spare_kb
    if held > memory_kb then
      return held // 1
    end
  end
end

local function memory_breach()
  if over_memory(0) then
    return format("memory limit exceeded (%d KiB)", memory_kb)
  end
end

--- The reason the call is over a limit, or nil.
local function breach(call)
  if clock() > call.deadline then
    return format("cpu time limit exceeded (%g s)", call.budget)
  end
  return memory_breach()
end

--- The count hook. Raises the kill in the running thread when the innermost call is over a limit,
-- or killed already; from then on it fires at every instruction of that thread. A thread it raises
-- in always dies: every catch a script has re-raises the kill.
local function hook()
  local call = calls[#calls]
  if not call.killed then
    local reason = breach(call)
    if reason == nil then
      return
    end
    call.killed, call.reason = true, reason
  end
  sethook(hook, "", 1)
  error(call.reason, 0)
end

--- Re-raises the kill where the script could catch it.
local function check()
  local call = calls[#calls]
  if call.killed then
    error(call.reason, 0)
  end
end

local function checked(...)
  check()
  return ...
end

---------------------------------------------------------------------------------------------------
-- The sandbox's versions of pcall, xpcall and coroutine (sandbox.lua puts them in the environment)
---------------------------------------------------------------------------------------------------

function limits.pcall(f, ...)
  check()
  return checked(pcall(f, ...))
end

local function handled(handler, ok, ...)
  check()
  if ok then
    return true, ...
  end
  -- An error inside the handler is returned in place of its result (Lua reports "error in error
  -- handling" instead).
  local _, result = pcall(handler, (...))
  check()
  return false, result
end

--- xpcall on top of pcall: the handler runs after the stack is unwound (so it cannot see the frames
-- of the error, debug.traceback is not available anyway), hooked like any other code.
function limits.xpcall(f, handler, ...)
  check()
  return handled(handler, pcall(f, ...))
end

local function create(f)
  check()
  local thread = co_create(f)
  sethook(thread, hook, "", HOOK_PERIOD)
  return thread
end

local function wrapped(thread, ok, ...)
  check()
  if ok then
    return ...
  end
  local err = ...
  -- As coroutine.wrap does: close the dead coroutine's pending to-be-closed variables, then raise
  -- the error, with the caller's position when it is a string.
  co_close(thread)
  check()
  error(err, 2)
end

limits.coroutine = {
  create = create,
  wrap = function(f)
    local thread = create(f)
    return function(...)
      return wrapped(thread, co_resume(thread, ...))
    end
  end,
  resume = function(thread, ...)
    check()
    return checked(co_resume(thread, ...))
  end,
  close = function(thread)
    check()
    return checked(co_close(thread))
  end,
  isyieldable = coroutine.isyieldable,
  running = coroutine.running,
  status = coroutine.status,
  yield = coroutine.yield,
}

---------------------------------------------------------------------------------------------------
-- Running calls
---------------------------------------------------------------------------------------------------

--- The text of an error object. Tables and userdata are not asked for their __tostring: that would
-- run script code outside any limit.
--- `text` cut to `max_bytes` at a UTF-8 character boundary, marked " [truncated]" when cut (error
-- texts here, print lines in sandbox.lua).
function limits.clip(text, max_bytes)
  if #text <= max_bytes then
    return text
  end
  local cut = max_bytes
  while cut > 0 and byte(text, cut + 1) & 0xC0 == 0x80 do
    cut = cut - 1
  end
  return sub(text, 1, cut) .. " [truncated]"
end

local function describe(err)
  local kind = type(err)
  if kind == "string" then
    return limits.clip(err, MAX_ERROR_BYTES)
  elseif kind == "number" then
    return tostring(err)
  end
  return "(error object is a " .. kind .. " value)"
end

--- Runs `fn(...)` as a call with `budget` seconds of CPU time. Returns true and fn's first result,
-- or false and the error text; then, when the heap is still over the cap once the call is over, the
-- reason to restart the process (the call has failed then). A yield that reaches this boundary fails
-- the call.
function limits.run(budget, fn, ...)
  local started = clock()
  local call = { budget = budget, deadline = started + budget }
  calls[#calls + 1] = call
  local thread = co_create(fn)
  sethook(thread, hook, "", HOOK_PERIOD)
  local ok, value = co_resume(thread, ...)
  if ok and co_status(thread) == "suspended" then
    ok, value = false, "attempt to yield across the sandbox boundary"
  end
  if not ok then
    -- Run the pending to-be-closed variables now, while this call's limits still apply.
    co_close(thread)
  end
  calls[#calls] = nil
  local caller = calls[#calls]
  if caller then
    caller.deadline = caller.deadline + (clock() - started)
  end
  -- The result (a string of encoded bytes) is on its way out; only what stays counts.
  local held = over_memory(ok and type(value) == "string" and #value // 1024 or 0)
  if held then
    return false, format("memory limit exceeded (%d KiB): the scripts keep %d KiB once the call is over",
                         memory_kb, held),
           format("the scripts keep %d KiB once a call is over, more than the memory limit (%d KiB)",
                  held, memory_kb)
  elseif call.killed then
    return false, call.reason
  elseif ok then
    return true, value
  end
  return false, describe(value)
end

--- Runs `fn(...)`, a built-in's frame exchange, with the calling thread's hook off, so that no limit
-- fires half-way through it; returns fn's first two results once the limits are enforced again.
-- The heap is checked first: a call over its memory cap makes no more built-in calls. A third result
-- `stop` from fn (the broker's reply said the call's budget is spent) kills the call with the reply's
-- text, as a limit does.
function limits.paused(fn, ...)
  local call = calls[#calls]
  if not call.killed then
    local reason = memory_breach()
    if reason then
      call.killed, call.reason = true, reason
    end
  end
  check()
  local thread_hook, mask, count = gethook()
  sethook()
  local ok, value, stop = fn(...)
  sethook(thread_hook, mask, count)
  if stop and not call.killed then
    call.killed, call.reason = true, type(value) == "string" and value or "the call was stopped by the broker"
  end
  hook()
  return ok, value
end

--- Whether a call or load is running (built-ins exist only inside one).
function limits.running()
  return calls[1] ~= nil
end

--- The innermost running call: a table where other modules may keep per-call counters.
function limits.current()
  return calls[#calls]
end

return limits
