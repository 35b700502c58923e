--- The frame loop: calls and loads in, results, rpcs and logs out (design.md "The wire";
-- sandbox/messages.py is the reference for the shapes).
--
--   broker → Lua  ["call", id, function, args, opts]    opts: keepStrings (bool), cpu (seconds)
--                 ["load", id, source, chunkname]
--                 ["reply", id, ok, value]               the answer to an rpc
--                 ["reply", id, false, reason, {stop = true}]   ...that ends the call (budget spent)
--   Lua → broker  ["ready", {lua, builtins, trusted}]    once, from shim.lua
--                 ["rpc", id, builtin, args]
--                 ["result", id, true, {defined = false}]              the function is not defined
--                 ["result", id, true, {defined = true, value = v}]    v: the first return value
--                 ["result", id, true, {functions = [names]}]          a load ran
--                 ["result", id, false, "error text"]                  a call or load failed
--                 ["result", id, ok, value, {functions = [names]}]     a call that changed the list
--                 ["result", id, false, text, {restart = reason}]     the heap stays over its cap
--                 ["log", level, text]                   "print" (a script's print) or "warning"
--
-- Calls nest: while a built-in waits for its reply, the broker may send a call or a load; it runs,
-- with its own limits, and is answered before the wait goes on.

local import = ...
local json = import("json")
local limits = import("limits")
local msgpack = import("msgpack")
local wire = import("wire")

local exit = os.exit
local math_type = math.type
local unpack = table.unpack
local error, load, next, rawget, tostring, type = error, load, next, rawget, tostring, type

local loop = {}

local env, functions, default_cpu  -- see loop.serve
local rpc_count = 0
--- Bytes of a frame that are not the result's value (envelope and the function list's own share
-- is checked when the frame is built).
local ENVELOPE_BYTES = 1024

--- Sends a result frame, with its fifth element (the new function list, the reason to restart)
-- only when there is one of them.
local function send(id, ok, value, changed, restart)
  if changed or restart then
    return wire.send("result", id, ok, value, { functions = changed and json.array(changed), restart = restart })
  end
  return wire.send("result", id, ok, value)
end

--- Sends a result; `changed` is the new list of script-defined functions, or nil; `restart` the
-- reason the process must be restarted after this call, or nil. A frame over the limit becomes an
-- error result (the list then goes with the next result).
local function send_result(id, ok, value, changed, restart)
  local sent, reason = send(id, ok, value, changed, restart)
  if not sent then
    if changed then
      functions.retry()
    end
    send(id, false, "the result is too large: " .. reason, nil, restart)
  end
end

--- The length of a decoded argument list: its highest index (a nil argument leaves a hole that #
-- need not see past).
local function length(list)
  local n = 0
  for index in next, list do
    if math_type(index) == "integer" and index > n then
      n = index
    end
  end
  return n
end

--- A callback is run only when its global is a function (Orthanc skips undefined callbacks
-- silently). The global is read raw: a metatable a script set on _G must not run outside a call.
-- The first return value is converted as Orthanc's GetJson does and encoded to msgpack inside the
-- call, so both are under the call's limits (CPU, memory, the depth and value caps of json.lua, and
-- the frame limit: a result too large fails the call with a clear error).
local function run_call(id, name, args, opts)
  local fn = rawget(env, name)
  if type(fn) ~= "function" then
    return send_result(id, true, { defined = false }, functions.changed())
  end
  local keep_strings = opts.keepStrings == true
  local budget = type(opts.cpu) == "number" and opts.cpu or default_cpu
  local ok, value, restart = limits.run(budget, function(...)
    local tree = json.to_json_value((fn(...)), keep_strings)
    local bytes, reason = msgpack.encode(tree, wire.max_frame() - ENVELOPE_BYTES)
    if bytes == nil then
      error("the result is too large: " .. reason, 0)
    end
    return bytes
  end, unpack(args, 1, length(args)))
  if ok then
    value = { defined = true, value = msgpack.raw(value) }
  end
  send_result(id, ok, value, functions.changed(), restart)
end

--- A chunk is compiled as text in the script environment; the chunkname makes the error positions
-- ("line" gives `[string "line"]:1:`, "@/path/x.lua" gives `/path/x.lua:1:`).
local function run_load(id, source, chunkname)
  local chunk, err = load(source, chunkname, "t", env)
  if chunk == nil then
    return send_result(id, false, err)
  end
  local ok, restart
  ok, err, restart = limits.run(default_cpu, chunk)
  if not ok then
    return send_result(id, false, err, functions.changed(), restart)
  end
  send_result(id, true, { functions = json.array(functions.all()) })
end

--- Runs a call or a load; anything else is a protocol error.
local function handle(message)
  local kind = type(message) == "table" and message[1]
  local id = kind and message[2]
  if kind == "call" and math_type(id) == "integer" and type(message[3]) == "string"
      and type(message[4]) == "table" and type(message[5]) == "table" then
    run_call(id, message[3], message[4], message[5])
  elseif kind == "load" and math_type(id) == "integer" and type(message[3]) == "string"
      and type(message[4]) == "string" then
    run_load(id, message[3], message[4])
  else
    local what = type(message) == "table" and tostring(message[1]) .. " message" or type(message)
    wire.fail("expected a well-formed call or load, got a " .. what)
  end
end

--- Serves the broker until the end of input.
-- `script_env` and `tracker` come from sandbox.build; `cpu` is the CPU budget of a load and of a
-- call whose opts carry none.
function loop.serve(script_env, tracker, cpu)
  env, functions, default_cpu = script_env, tracker, cpu
  while true do
    local message = wire.receive()
    if message == nil then
      return
    end
    handle(message)
  end
end

--- Sends a built-in's call and waits for its reply, serving the calls that arrive meanwhile.
-- Returns the reply's ok and value, and true when the reply says to stop the call (its budget is
-- spent). The end of input means the broker is gone: exit quietly.
function loop.rpc(name, args)
  rpc_count = rpc_count + 1
  local id = rpc_count
  local sent, reason = wire.send("rpc", id, name, args)
  if not sent then
    return false, "the arguments of " .. name .. " are too large: " .. reason
  end
  while true do
    local message = wire.receive()
    if message == nil then
      exit(0)
    elseif type(message) == "table" and message[1] == "reply" then
      if message[2] ~= id or type(message[3]) ~= "boolean" then
        wire.fail("expected the reply to rpc " .. id .. ", got one for " .. tostring(message[2]))
      end
      local flags = message[5]
      return message[3], message[4], type(flags) == "table" and flags.stop == true
    end
    handle(message)
  end
end

return loop
