--- The script environment, and the policy it is built from (design.md "Sandbox lifecycle",
-- sandbox-research.md 1.1 and 4.1 point 6).
--
-- The environment is built FROM the allow lists below, never by deleting from the real globals.
-- Libraries are read-only proxies over private copies. The environment itself is a plain table:
-- scripts can create globals, and an undefined global reads as nil, as Orthanc scripts expect
-- (execute-script installs callbacks and variables such as `aet = "HELLO"` that later calls use).

local import = ...
local builtins = import("builtins")
local json = import("json")
local limits = import("limits")
local toolbox = import("toolbox")

local POLICY = {
  --- What scripts get unchanged, by origin.
  allowed = {
    -- Lua's base library: functions that only compute on their arguments.
    _G = { "_VERSION", "assert", "error", "getmetatable", "ipairs", "next", "pairs", "rawequal", "rawget",
           "rawlen", "rawset", "select", "tonumber", "tostring", "type" },
    -- Libraries that only compute. Scripts get read-only proxies, so no script patches what another
    -- one (or the shim) calls.
    math = { "abs", "acos", "asin", "atan", "ceil", "cos", "deg", "exp", "floor", "fmod", "huge", "log",
             "max", "maxinteger", "min", "mininteger", "modf", "pi", "rad", "random", "randomseed",
             "sin", "sqrt", "tan", "tointeger", "type", "ult" },
    string = { "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match", "pack",
               "packsize", "rep", "reverse", "sub", "unpack", "upper" },
    table = { "concat", "insert", "move", "pack", "remove", "sort", "unpack" },
    utf8 = { "char", "charpattern", "codepoint", "codes", "len", "offset" },
    -- os, reduced to reading the clocks and formatting dates.
    os = { "clock", "date", "difftime", "time" },
  },
  --- What scripts get in a sandbox-aware version, and why the original would not do.
  wrapped = {
    load = "text chunks only (mode 't': binary chunks are not verified by Lua), compiled in the "
        .. "script environment unless a table is given as env",
    setmetatable = "refuses __gc: a finalizer runs whenever the GC decides, outside any call and limit",
    collectgarbage = "'count' only: 'stop', 'incremental' and the rest retune the GC of the whole process",
    pcall = "re-raises the limit error of a killed call (limits.lua)",
    xpcall = "built on pcall: Lua runs a handler with hooks off when a hook raised the error",
    coroutine = "new threads get the call's count hook; a yield cannot leave the call",
    print = "Orthanc's print: arguments joined with ', ', sent as a log frame, capped per call",
  },
  --- What scripts do not get. `build` checks that none of it is reachable from the environment.
  removed = {
    io = "files and processes (io.popen): scripts reach the server through built-ins only",
    ["os.execute"] = "runs shell commands",
    ["os.exit"] = "ends the sandbox process",
    ["os.getenv"] = "reads the process environment",
    ["os.remove"] = "deletes files",
    ["os.rename"] = "moves files",
    ["os.tmpname"] = "creates files",
    ["os.setlocale"] = "changes number formatting for the whole process, the shim included",
    dofile = "runs files",
    loadfile = "loads files",
    require = "loads Lua files and native modules",
    package = "the module system, package.loadlib loads native code (Redis CVE-2022-0543)",
    debug = "reads and rewrites locals, upvalues, hooks and metatables: defeats every other rule",
    ["string.dump"] = "makes binary chunks",
    warn = "writes to the interpreter's stderr; scripts log with print",
  },
}

--- Longest print line sent, in bytes; a longer one is cut and marked " [truncated]".
local MAX_LINE_BYTES = 64 * 1024

local byte, format, gmatch, sub = string.byte, string.format, string.gmatch, string.sub
local concat, pack, sort = table.concat, table.pack, table.sort
local assert, collectgarbage, error, getmetatable, load, next, pairs, rawget, setmetatable, tostring, type =
      assert, collectgarbage, error, getmetatable, load, next, pairs, rawget, setmetatable, tostring, type

--- The allowed values, copied from the real globals now, while the shim still has them.
local ORIGINALS = {}
for origin, names in pairs(POLICY.allowed) do
  local library = origin == "_G" and _G or _G[origin]
  local copy = {}
  for _, name in pairs(names) do
    copy[name] = library[name]
    assert(copy[name] ~= nil, "sandbox policy: " .. origin .. "." .. name .. " does not exist")
  end
  ORIGINALS[origin] = copy
end

local STRING_METATABLE = getmetatable("")

local sandbox = {}

--- A table that reads through to `source` and refuses writes. `pairs` lists the source without
-- handing it out (rawset still works, on the proxy only: it cannot reach the source).
local function read_only(name, source)
  return setmetatable({}, {
    __index = source,
    __newindex = function()
      error(name .. " is read-only", 2)
    end,
    __pairs = function()
      return function(_, key)
        return next(source, key)
      end
    end,
    __metatable = false,
  })
end

--- A line cut to MAX_LINE_BYTES, at a UTF-8 character boundary.
local function clip(line)
  if #line <= MAX_LINE_BYTES then
    return line
  end
  local cut = MAX_LINE_BYTES
  while cut > 0 and byte(line, cut + 1) & 0xC0 == 0x80 do
    cut = cut - 1
  end
  return sub(line, 1, cut) .. " [truncated]"
end

--- Orthanc's print: each argument goes through the script's global `tostring` (a result that is
-- not a string or a number gives "<No conversion to string>"), joined with ", ". The line goes
-- to the broker as a ["log", "print", line] frame; past `max_lines` in one call, lines are dropped
-- and one warning says so.
local function make_print(env, log, max_lines)
  return function(...)
    local call = limits.current()
    local printed = (call.printed or 0) + 1
    call.printed = printed
    if printed > max_lines then
      if printed == max_lines + 1 then
        log("warning", format("print: more than %d lines in one call, the rest is dropped", max_lines))
      end
      return
    end
    local convert = env.tostring
    local args, parts = pack(...), {}
    for i = 1, args.n do
      local text = convert(args[i])
      local kind = type(text)
      if kind == "number" then
        text = tostring(text)
      elseif kind ~= "string" then
        text = "<No conversion to string>"
      end
      parts[i] = text
    end
    log("print", clip(concat(parts, ", ")))
  end
end

--- The global of a built-in: its arguments, nils included, cross to the broker as an `rpc`, and
-- the reply is returned (ok) or raised (not ok).
local function make_stub(name, rpc)
  local outside = name .. " can only be called while a callback runs"
  return function(...)
    if not limits.running() then
      error(outside, 2)
    end
    local args = pack(...)
    for i = 1, args.n do
      args[i] = json.to_wire_value(args[i])
    end
    local ok, value = limits.paused(rpc, name, json.array(args))
    if not ok then
      error(value, 2)
    end
    return value
  end
end

--- Fails when an allow list lets through something the removed list names.
local function check_removed(env)
  for path in pairs(POLICY.removed) do
    local value = env
    for part in gmatch(path, "[^.]+") do
      value = value and value[part]
    end
    assert(value == nil, "sandbox policy: " .. path .. " is removed but reachable")
  end
end

--- Builds the script environment, once per process, before the shim empties the real globals.
-- `options`: `rpc(name, args)` sends a built-in's call and returns (ok, value) from its reply;
-- `log(level, text)` sends a log frame; `max_log_lines` caps print per call.
-- Returns the environment, and a function listing the global functions the scripts defined.
function sandbox.build(options)
  local env = {}
  for name, value in pairs(ORIGINALS._G) do
    env[name] = value
  end
  for origin, copy in pairs(ORIGINALS) do
    if origin ~= "_G" then
      env[origin] = read_only(origin, copy)
    end
  end
  env._G = env

  function env.load(chunk, chunkname, _, chunk_env)
    if type(chunk) ~= "string" then
      error("bad argument #1 to 'load' (string expected, got " .. type(chunk) .. ")", 2)
    end
    if type(chunk_env) ~= "table" then
      chunk_env = env
    end
    return load(chunk, chunkname, "t", chunk_env)
  end

  function env.setmetatable(t, metatable)
    if type(metatable) == "table" and rawget(metatable, "__gc") ~= nil then
      error("setmetatable: __gc is not allowed (a finalizer would run outside any callback)", 2)
    end
    return setmetatable(t, metatable)
  end

  function env.collectgarbage(option)
    if option ~= "count" then
      error('collectgarbage: only "count" is available in the sandbox', 2)
    end
    return collectgarbage("count")
  end

  env.pcall, env.xpcall = limits.pcall, limits.xpcall
  env.coroutine = read_only("coroutine", limits.coroutine)
  env.print = make_print(env, options.log, options.max_log_lines)
  for name, helper in pairs(toolbox.functions(env)) do
    env[name] = helper
  end
  for _, name in pairs(builtins) do
    env[name] = make_stub(name, options.rpc)
  end
  check_removed(env)

  -- The string metatable is shared by every string of the process: its methods become the private
  -- copy (no dump), and getmetatable("") returns false so no script can reach them.
  STRING_METATABLE.__index = ORIGINALS.string
  STRING_METATABLE.__metatable = false

  local initial = {}
  for name, value in next, env do
    initial[name] = value
  end
  local function script_functions()
    local names = {}
    for name, value in next, env do
      if type(name) == "string" and type(value) == "function" and initial[name] ~= value then
        names[#names + 1] = name
      end
    end
    sort(names)
    return names
  end
  return env, script_functions
end

return sandbox
