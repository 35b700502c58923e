--- The helpers of Orthanc's toolbox that run in Lua, not in the broker (spec section 3).

local import = ...
local json = import("json")

local pairs, select, tostring, type = pairs, select, tostring, type

local toolbox = {}

--- `ParseJson(s)`: the Lua value of a JSON text; nil unless called with exactly one string, or when
-- the text is not JSON.
local function parse_json(...)
  local text = ...
  if select("#", ...) ~= 1 or type(text) ~= "string" then
    return nil
  end
  return json.decode(text)
end

--- `DumpJson(v [, keepStrings])`: the compact JSON text of any value; nil with no argument, more
-- than two, or a second one that is not a boolean.
local function dump_json(...)
  local count = select("#", ...)
  local value, keep_strings = ...
  if count == 0 or count > 2 or (count == 2 and type(keep_strings) ~= "boolean") then
    return nil
  end
  return json.encode(json.to_json_value(value, keep_strings))
end

--- The toolbox globals of the script environment `env`.
function toolbox.functions(env)
  --- `PrintRecursive(v [, limit [, indent]])`, Orthanc's Toolbox.lua line for line. It prints through
  -- the script's global `print`, whose ", " join turns `print(indent, type, v)` into lines such as
  -- ", string, x" and "\t[PatientName], string, DOE". Each non-table value uses up one item of
  -- `limit`; returns what is left of it.
  local function print_recursive(value, limit, indent)
    limit = limit or 100
    indent = indent or ""
    local print = env.print
    if limit < 1 then
      print("ERROR: Item limit reached.")
      return limit - 1
    end
    local kind = type(value)
    if kind ~= "table" then
      print(indent, kind, value)
      return limit - 1
    end
    print(indent, kind)
    for key, item in pairs(value) do
      limit = print_recursive(item, limit, indent .. "\t[" .. tostring(key) .. "]")
      if limit < 0 then
        break
      end
    end
    return limit
  end

  return {
    DumpJson = dump_json,
    ParseJson = parse_json,
    PrintRecursive = print_recursive,
    -- Slot for the job helpers of Toolbox.lua (SendToModality, SendToPeer, Delete, ModifyResource,
    -- ModifyInstance, CallSystem and `_job`, spec section 4): they come with the jobs engine.
  }
end

return toolbox
