--- The script environment, and the policy it is built from (design.md "Sandbox lifecycle",
-- sandbox-research.md 1.1 and 4.1 point 6; docs/security.md mirrors the POLICY table).
--
-- The environment is built FROM the allow lists below, never by deleting from the real globals.
-- Libraries are read-only proxies over private copies. The environment itself is a plain table:
-- scripts can create globals, and an undefined global reads as nil, as Orthanc scripts expect
-- (execute-script installs callbacks and variables such as `aet = "HELLO"` that later calls use).
--
-- The broker skips a callback it believes undefined, so the shim tells it which global functions
-- the scripts defined, exactly and cheaply: a __newindex on the environment notes every new global
-- (a function marks the list dirty; any other value is put on a short watch list, since a later
-- raw assignment to that name is invisible), `rawset` on the environment does the same, and after
-- each call the watch list is checked. The list is sent again only when it changed (see `build`).

local import = ...
local builtins = import("builtins")
local json = import("json")
local limits = import("limits")
local toolbox = import("toolbox")
local jobs = import("jobs")  -- Orthanc's job helpers (SendToModality, ...) and _CallWithJob

local POLICY = {
  --- What scripts get unchanged, by origin.
  allowed = {
    -- Lua's base library: functions that only compute on their arguments.
    _G = { "_VERSION", "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen", "select",
           "tonumber", "tostring", "type" },
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
    getmetatable = "hides the environment's own metatable (the function tracker); getmetatable('') is false",
    rawset = "a new global set with rawset(_G, ...) is noted like any other (the function tracker)",
    collectgarbage = "'count' only: 'stop', 'incremental' and the rest retune the GC of the whole process",
    pcall = "re-raises the limit error of a killed call (limits.lua)",
    xpcall = "built on pcall: Lua runs a handler with hooks off when a hook raised the error",
    coroutine = "new threads get the call's count hook; a yield cannot leave the call",
    print = "Orthanc's print: arguments joined with ', ' (none before the first non-empty one), sent as a log frame, capped per call",
    require = "the Lua files of LuaModulesPath only, which the broker reads and sends as text when first "
        .. "required (no file access, no native module, no binary chunk); each runs once, in the script environment",
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
    package = "the module system, package.loadlib loads native code (Redis CVE-2022-0543)",
    debug = "reads and rewrites locals, upvalues, hooks and metatables: defeats every other rule",
    ["string.dump"] = "makes binary chunks",
    warn = "writes to the interpreter's stderr; scripts log with print",
  },
  --- What trusted scripts (LuaTrustedScripts, shim flag --trusted) get back: Orthanc's samples call
  -- gdcmconv or write files. The process still has the limits, and runs without bubblewrap.
  trusted = {
    io = { "open", "lines", "close", "popen", "tmpfile", "type" },
    os = { "execute", "getenv", "remove", "rename", "tmpname" },
  },
  --- What trusted scripts still do not get, and why.
  trusted_removed = {
    ["io.read"] = "stdin carries the broker's frames",
    ["io.write"] = "stdout carries the broker's frames (print logs a line)",
    ["io.input"] = "would read the frame pipe",
    ["io.output"] = "would write the frame pipe",
    ["io.stdin"] = "the frame pipe",
    ["io.stdout"] = "the frame pipe",
    ["io.stderr"] = "the broker keeps only a tail of it; print logs a line",
    ["os.exit"] = "ends the sandbox process",
    ["os.setlocale"] = "changes number formatting for the whole process, the shim included",
  },
}

--- Longest print line sent, in bytes; a longer one is cut and marked " [truncated]".
local MAX_LINE_BYTES = 64 * 1024

local format, gmatch, match = string.format, string.gmatch, string.match
local concat, pack, sort = table.concat, table.pack, table.sort
local assert, collectgarbage, error, getmetatable, load, next, pairs, rawequal, rawget, rawset, setmetatable,
      tostring, type =
      assert, collectgarbage, error, getmetatable, load, next, pairs, rawequal, rawget, rawset, setmetatable,
      tostring, type

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

--- What trusted scripts get back, copied now too (the shim empties the real globals later).
local TRUSTED_ORIGINALS = {}
for origin, names in pairs(POLICY.trusted) do
  local copy = {}
  for _, name in pairs(names) do
    copy[name] = _G[origin][name]
    assert(copy[name] ~= nil, "sandbox policy: " .. origin .. "." .. name .. " does not exist")
  end
  TRUSTED_ORIGINALS[origin] = copy
end
local FILE_METATABLE = getmetatable(io.stdout)

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


--- Orthanc's print: each argument goes through the script's global `tostring` (a result that is
-- not a string or a number gives "<No conversion to string>"), joined with ", " (none before the
-- first non-empty piece). The line goes
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
    local args, parts, empty = pack(...), {}, true
    for i = 1, args.n do
      local text = convert(args[i])
      local kind = type(text)
      if kind == "number" then
        text = tostring(text)
      elseif kind ~= "string" then
        text = "<No conversion to string>"
      end
      -- Orthanc puts ", " before a piece only once the line is not empty: ('', 'b') prints "b".
      parts[#parts + 1] = empty and text or ", " .. text
      empty = empty and text == ""
    end
    log("print", limits.clip(concat(parts), MAX_LINE_BYTES))
  end
end

--- The global of a built-in: its arguments, nils included, cross to the broker as an `rpc`, and
-- the reply is returned (ok) or raised (not ok); a built-in of `builtins.no_result` returns nothing.
local function make_stub(name, rpc)
  local no_result = builtins.no_result[name]
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
    if no_result then
      return
    end
    return value
  end
end

--- Fails when an allow list lets through something a removed list names.
local function check_removed(env, removed)
  for path in pairs(removed) do
    local value = env
    for part in gmatch(path, "[^.]+") do
      value = value and value[part]
    end
    assert(value == nil, "sandbox policy: " .. path .. " is removed but reachable")
  end
end

--- The trusted versions of `io` and `os`: the real functions, except that the two that default to
-- the standard streams need their argument (stdin and stdout carry the frames).
local function trusted_libraries()
  local io_copy, os_copy = {}, {}
  for name, value in pairs(TRUSTED_ORIGINALS.io) do
    io_copy[name] = value
  end
  local real_lines, real_close = io_copy.lines, io_copy.close
  function io_copy.lines(filename, ...)
    if type(filename) ~= "string" then
      error("bad argument #1 to 'lines' (a file name is required: stdin carries the broker's frames)", 2)
    end
    return real_lines(filename, ...)
  end
  function io_copy.close(file)
    if io_copy.type(file) ~= "file" then
      error("bad argument #1 to 'close' (a file is required: stdout carries the broker's frames)", 2)
    end
    return real_close(file)
  end
  for name, value in pairs(ORIGINALS.os) do
    os_copy[name] = value
  end
  for name, value in pairs(TRUSTED_ORIGINALS.os) do
    os_copy[name] = value
  end
  -- File handles share one metatable; a script must not patch the methods the shim's own stdout uses.
  FILE_METATABLE.__metatable = false
  return io_copy, os_copy
end

--- Keeps the list of global functions the scripts defined (see the top of this file). Names that
-- are in the environment when it is built (the shim's own) are never listed.
local function function_tracker(env)
  local initial = {}
  for name in next, env do
    initial[name] = true
  end
  local dirty, watch = true, {}
  -- Names on the watch list, and how many of them were live globals at the last full scan: a list
  -- grown far past that (globals created and dropped by the thousand) is pruned by a full scan.
  local watched, live = 0, 0
  local untracked = false  -- a script set its own metatable on _G: compare full lists after each call
  local last = {}

  local function note(name, value)
    if type(name) ~= "string" or initial[name] then
      return
    end
    if type(value) == "function" then
      dirty = true
    elseif not watch[name] then
      watch[name] = true
      watched = watched + 1
      if watched > 2 * live + 1024 then
        dirty = true
      end
    end
  end

  local function full_list()
    local names, new_watch, count = {}, {}, 0
    for name, value in next, env do
      if type(name) == "string" and not initial[name] then
        if type(value) == "function" then
          names[#names + 1] = name
        else
          new_watch[name] = true
          count = count + 1
        end
      end
    end
    sort(names)
    watch, dirty, watched, live = new_watch, false, count, count
    return names
  end

  local function same(a, b)
    if not b or #a ~= #b then
      return false
    end
    for i = 1, #a do
      if a[i] ~= b[i] then
        return false
      end
    end
    return true
  end

  local tracker = {}

  --- The environment's own metatable (the script sees nil from getmetatable(_G)).
  tracker.metatable = {
    __newindex = function(t, name, value)
      rawset(t, name, value)
      note(name, value)
    end,
  }

  tracker.note = note

  --- The complete sorted list (after a load, which always reports it).
  function tracker.all()
    last = full_list()
    return last
  end

  --- The new list if it changed since it was last reported, else nil. Costs one lookup per name on
  -- the watch list (globals holding a non-function) when nothing changed.
  function tracker.changed()
    if not dirty and not untracked then
      for name in next, watch do
        if type(rawget(env, name)) == "function" then
          dirty = true
          break
        end
      end
      if not dirty then
        return nil
      end
    end
    local names = full_list()
    if same(names, last) then
      return nil
    end
    last = names
    return names
  end

  --- The list could not be sent: send it with the next result.
  function tracker.retry()
    dirty, last = true, false
  end

  --- A script replaced the environment's metatable (nil: it restored ours).
  function tracker.replaced(metatable)
    untracked = metatable ~= nil
    dirty = true
  end

  return tracker
end

--- Builds the script environment, once per process, before the shim empties the real globals.
-- `options`: `rpc(name, args)` sends a built-in's call and returns (ok, value) from its reply;
-- `log(level, text)` sends a log frame; `max_log_lines` caps print per call; `trusted` adds
-- POLICY.trusted.
-- Returns the environment, and the tracker of the global functions the scripts define:
-- `tracker.all()` (the sorted list) and `tracker.changed()` (the list, or nil when unchanged).
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

  -- A table given as env is kept: the chunk then sees only that table, which the script built from
  -- what it already has (its one upvalue is _ENV; the mode is always "t"). Anything else, nil
  -- included, means the script environment.
  function env.load(chunk, chunkname, _, chunk_env)
    if type(chunk) ~= "string" then
      error("bad argument #1 to 'load' (string expected, got " .. type(chunk) .. ")", 2)
    end
    if type(chunk_env) ~= "table" then
      chunk_env = env
    end
    return load(chunk, chunkname, "t", chunk_env)
  end

  local tracker  -- set below, once the environment is complete
  local own_metatable

  function env.setmetatable(t, metatable)
    if type(metatable) == "table" and rawget(metatable, "__gc") ~= nil then
      error("setmetatable: __gc is not allowed (a finalizer would run outside any callback)", 2)
    end
    if rawequal(t, env) then
      -- Keep Lua's semantics (a strict-mode metatable works); the tracker compares full lists then.
      setmetatable(env, metatable == nil and own_metatable or metatable)
      tracker.replaced(metatable)
      return t
    end
    return setmetatable(t, metatable)
  end

  -- The environment's metatable is the shim's until a script sets one: the script sees nil.
  function env.getmetatable(value)
    if rawequal(value, env) and rawequal(getmetatable(env), own_metatable) then
      return nil
    end
    return getmetatable(value)
  end

  function env.rawset(t, key, value)
    rawset(t, key, value)
    if rawequal(t, env) then
      tracker.note(key, value)
    end
    return t
  end

  function env.collectgarbage(option)
    if option ~= "count" then
      error('collectgarbage: only "count" is available in the sandbox', 2)
    end
    return collectgarbage("count")
  end

  -- A module's value is kept per process, as package.loaded would (package itself is removed).
  local loaded = {}
  function env.require(name)
    if type(name) ~= "string" then
      error("bad argument #1 to 'require' (string expected, got " .. type(name) .. ")", 2)
    end
    local value = loaded[name]
    if value ~= nil then
      return value
    end
    if not limits.running() then
      error("require can only be called while a script loads or a callback runs", 2)
    end
    local ok, module = limits.paused(options.rpc, "require", json.array({ name }))
    if not ok then
      error(module, 2)
    end
    local chunk, err = load(module.source, module.chunkname, "t", env)
    if chunk == nil then
      error("error loading module '" .. name .. "': " .. err, 2)
    end
    value = chunk(name, module.chunkname:sub(2))
    if value == nil then
      value = true
    end
    loaded[name] = value
    return value
  end

  env.pcall, env.xpcall = limits.pcall, limits.xpcall
  env.coroutine = read_only("coroutine", limits.coroutine)
  env.print = make_print(env, options.log, options.max_log_lines)
  for name, helper in pairs(toolbox.functions(env)) do
    env[name] = helper
  end
  for name, helper in pairs(jobs.functions(env)) do
    env[name] = helper
  end
  for i = 1, #builtins do
    env[builtins[i]] = make_stub(builtins[i], options.rpc)
  end
  if options.trusted then
    local io_copy, os_copy = trusted_libraries()
    env.io, env.os = read_only("io", io_copy), read_only("os", os_copy)
    local still_removed = {}
    for path, reason in pairs(POLICY.removed) do
      local origin, name = match(path, "^(%w+)%.?(%w*)$")
      local granted = origin == "io" or (origin == "os" and TRUSTED_ORIGINALS.os[name] ~= nil)
      if not granted then
        still_removed[path] = reason
      end
    end
    for path, reason in pairs(POLICY.trusted_removed) do
      still_removed[path] = reason
    end
    check_removed(env, still_removed)
  else
    check_removed(env, POLICY.removed)
  end

  -- The string metatable is shared by every string of the process: its methods become the private
  -- copy (no dump), and getmetatable("") returns false so no script can reach them.
  STRING_METATABLE.__index = ORIGINALS.string
  STRING_METATABLE.__metatable = false

  tracker = function_tracker(env)
  own_metatable = tracker.metatable
  setmetatable(env, own_metatable)
  return env, tracker
end

return sandbox
