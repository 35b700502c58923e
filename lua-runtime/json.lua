--- Orthanc's JSON conversions, done in Lua, next to the values (spec sections 1b, 1c, 1d).
--
-- Three faithful ports of what Orthanc does in C++:
--   * `to_json_value(v, keepStrings)`: Orthanc's `GetJson`, a Lua value becomes a JSON value tree;
--   * `encode(tree)`: jsoncpp's compact writer, a tree becomes text (`DumpJson`);
--   * `decode(text)`: jsoncpp's lenient reader, text becomes a Lua value (`ParseJson`).
--
-- A JSON value tree is made of Lua strings, numbers and booleans, `json.null`, arrays marked by
-- `json.array` (their length in field `n`, so a null never leaves a hole) and objects, which are plain
-- tables with string keys. msgpack.lua encodes the same trees: a value returned by a callback is
-- converted once, by the rules below, whether it ends up as text or on the wire.

local byte, find, format, match, sub = string.byte, string.find, string.format, string.match, string.sub
local concat, sort = table.concat, table.sort
local floor, huge, math_type, tointeger = math.floor, math.huge, math.type, math.tointeger
local utf8_char = utf8.char
local error, getmetatable, next, setmetatable, tonumber, tostring, type =
      error, getmetatable, next, setmetatable, tonumber, tostring, type

local json = {}

--- Nesting beyond this is refused. It stops cyclic tables, and leaves room for the two levels a
-- frame adds around a value within msgpack.lua's cap of 64.
local MAX_DEPTH = 48
--- Values (scalars and tables) in one conversion, so a huge result fails before it is encoded.
local MAX_VALUES = 1000000
--- jsoncpp's default `stackLimit`.
local MAX_PARSE_DEPTH = 1000

local INT32_MIN, INT32_MAX = -2147483648, 2147483647

--- JSON null inside a tree (a nil could not be stored in a table).
local null = setmetatable({}, { __name = "json.null" })
json.null = null

local Array = { __name = "json.array" }

--- Marks `t` as a JSON array of `n` items (default `t.n`, then `#t`); items that are nil are nulls.
function json.array(t, n)
  t.n = n or t.n or #t
  return setmetatable(t, Array)
end

function json.is_array(t)
  return getmetatable(t) == Array
end

---------------------------------------------------------------------------------------------------
-- Lua → JSON value (Orthanc's GetJson)
---------------------------------------------------------------------------------------------------

--- Orthanc keeps a number as a JSON int when it is integral and fits int32; any other number is a
-- double (so `1e10` and `2^40` come out as `10000000000.0` and `1099511627776.0`).
local function orthanc_number(x)
  local f = x + 0.0
  if f >= INT32_MIN and f <= INT32_MAX and f == floor(f) then
    return tointeger(f)
  end
  return f
end

-- How strings and numbers are converted: by `keepStrings` (spec 1b), or kept for rpc arguments.

--- keepStrings == false: whatever `lua_isnumber` accepts is a number, numeric strings included
-- (" 12 " → 12, "0x10" → 16, "1e3" → 1000); `tonumber` applies the same coercion.
local function coerced_scalar(v)
  if type(v) == "string" then
    local number = tonumber(v)
    if number == nil then
      return v
    end
    v = number
  end
  return orthanc_number(v)
end

--- keepStrings == true: numbers become strings the way `tostring` writes them (2.0 → "2.0").
local function string_scalar(v)
  if type(v) == "number" then
    return tostring(v)
  end
  return v
end

--- Built-in arguments keep their Lua types; the broker validates them.
local function raw_scalar(v)
  return v
end

local converted  -- values converted so far by the running conversion (MAX_VALUES)

local convert

--- Orthanc turns each key into a string with `lua_tostring`; booleans and tables have none.
local function key_string(key)
  local kind = type(key)
  if kind == "string" then
    return key
  elseif kind == "number" then
    return tostring(key)
  end
  error("cannot convert to JSON: a table has a " .. kind .. " key (keys must be strings or numbers)", 0)
end

--- Orthanc's array-or-object rule: keys are visited in `next` order, each turned into a string, and
-- the table is an array iff every key string is all digits and equals a running counter (1, 2, 3…).
-- An empty table is therefore an array. The lookup by "1", "2"… mirrors jsoncpp, where a key such
-- as "01" counts as 1 but then has no item "1": the array gets a null there.
local function convert_table(t, scalar, depth)
  if depth > MAX_DEPTH then
    error("cannot convert to JSON: more than " .. MAX_DEPTH .. " nested tables (is a table its own descendant?)", 0)
  end
  local members, count, is_array = {}, 0, true
  for key, value in next, t do
    local name = key_string(key)
    members[name] = convert(value, scalar, depth)
    count = count + 1
    if is_array and (find(name, "^%d+$") == nil or tonumber(name) ~= count) then
      is_array = false
    end
  end
  if not is_array then
    return members
  end
  local items = {}
  for i = 1, count do
    local item = members[tostring(i)]
    if item == nil then
      item = null
    end
    items[i] = item
  end
  return json.array(items, count)
end

function convert(v, scalar, depth)
  converted = converted + 1
  if converted > MAX_VALUES then
    error("cannot convert to JSON: more than " .. MAX_VALUES .. " values", 0)
  end
  local kind = type(v)
  if kind == "string" or kind == "number" then
    return scalar(v)
  elseif kind == "boolean" then
    return v
  elseif kind == "table" then
    return convert_table(v, scalar, depth + 1)
  end
  -- nil, and what JSON cannot hold (functions, threads, userdata): Orthanc writes null.
  return null
end

--- Orthanc's `GetJson(value, keepStrings)`: the JSON value tree of any Lua value.
-- Tables are read raw (`next`), so no metamethod of the value runs; errors on boolean or table keys,
-- on nesting deeper than MAX_DEPTH (cycles) and on more than MAX_VALUES values.
function json.to_json_value(v, keepStrings)
  converted = 0
  return convert(v, keepStrings == true and string_scalar or coerced_scalar, 0)
end

--- The tree of a built-in's argument: tables as Orthanc reads them, strings and numbers unchanged.
function json.to_wire_value(v)
  converted = 0
  return convert(v, raw_scalar, 0)
end

---------------------------------------------------------------------------------------------------
-- JSON value → text (jsoncpp's StreamWriter, empty indentation)
---------------------------------------------------------------------------------------------------

local SHORT_ESCAPES = {
  [0x22] = '\\"', [0x5C] = "\\\\", [0x08] = "\\b", [0x0C] = "\\f", [0x0A] = "\\n", [0x0D] = "\\r",
  [0x09] = "\\t",
}
local NEEDS_ESCAPE = '[\0-\31"\\\128-\255]'
local REPLACEMENT = 0xFFFD

--- jsoncpp's `utf8ToCodepoint`, quirks included: continuation bytes are not checked, overlong forms
-- and encoded surrogates give U+FFFD, and so does a sequence cut short by the end of the string
-- (then only its first byte is consumed). Returns the code point and the bytes consumed.
local function decode_utf8(s, i, last)
  local first = byte(s, i)
  local left = last - i + 1
  if first < 0xE0 then
    if left < 2 then
      return REPLACEMENT, 1
    end
    local cp = ((first & 0x1F) << 6) | (byte(s, i + 1) & 0x3F)
    return cp < 0x80 and REPLACEMENT or cp, 2
  elseif first < 0xF0 then
    if left < 3 then
      return REPLACEMENT, 1
    end
    local b2, b3 = byte(s, i + 1, i + 2)
    local cp = ((first & 0x0F) << 12) | ((b2 & 0x3F) << 6) | (b3 & 0x3F)
    if (cp >= 0xD800 and cp <= 0xDFFF) or cp < 0x800 then
      return REPLACEMENT, 3
    end
    return cp, 3
  elseif first < 0xF8 then
    if left < 4 then
      return REPLACEMENT, 1
    end
    local b2, b3, b4 = byte(s, i + 1, i + 3)
    local cp = ((first & 0x07) << 18) | ((b2 & 0x3F) << 12) | ((b3 & 0x3F) << 6) | (b4 & 0x3F)
    return cp < 0x10000 and REPLACEMENT or cp, 4
  end
  return REPLACEMENT, 1
end

--- A code point as jsoncpp escapes it: \uXXXX in lower-case hex, a surrogate pair above U+FFFF.
local function unicode_escape(cp)
  if cp < 0x10000 then
    return format("\\u%04x", cp)
  end
  cp = cp - 0x10000
  return format("\\u%04x\\u%04x", 0xD800 + ((cp >> 10) & 0x3FF), 0xDC00 + (cp & 0x3FF))
end

--- A JSON string literal: ASCII kept except quote, backslash and controls; everything else escaped.
local function quote(s)
  if not find(s, NEEDS_ESCAPE) then
    return '"' .. s .. '"'
  end
  local out, i, last = { '"' }, 1, #s
  while i <= last do
    local j = find(s, NEEDS_ESCAPE, i)
    if j == nil then
      out[#out + 1] = sub(s, i)
      break
    end
    out[#out + 1] = sub(s, i, j - 1)
    local b = byte(s, j)
    if b < 0x80 then
      out[#out + 1] = SHORT_ESCAPES[b] or format("\\u%04x", b)
      i = j + 1
    else
      local cp, length = decode_utf8(s, j, last)
      out[#out + 1] = unicode_escape(cp)
      i = j + length
    end
  end
  out[#out + 1] = '"'
  return concat(out)
end

--- jsoncpp writes ints as they are and doubles with %.17g, adding ".0" when the text has neither '.'
-- nor 'e' (so a double stays a double on the way back); NaN is null and infinities are ±1e+9999.
local function number_text(x)
  if math_type(x) == "integer" then
    return format("%d", x)
  elseif x ~= x then
    return "null"
  elseif x == huge then
    return "1e+9999"
  elseif x == -huge then
    return "-1e+9999"
  end
  local text = format("%.17g", x)
  if not find(text, "[.e]") then
    text = text .. ".0"
  end
  return text
end

local function write(v, out)
  local kind = type(v)
  if kind == "string" then
    out[#out + 1] = quote(v)
  elseif kind == "number" then
    out[#out + 1] = number_text(v)
  elseif kind == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == nil or v == null then
    out[#out + 1] = "null"
  elseif getmetatable(v) == Array then
    out[#out + 1] = "["
    for i = 1, v.n do
      if i > 1 then
        out[#out + 1] = ","
      end
      write(v[i], out)
    end
    out[#out + 1] = "]"
  else
    -- Byte order: jsoncpp keeps members in a std::map; Lua compares strings with strcoll, and the
    -- shim never leaves the C locale (os.setlocale is not available to scripts).
    local names = {}
    for name in next, v do
      names[#names + 1] = name
    end
    sort(names)
    out[#out + 1] = "{"
    for i = 1, #names do
      if i > 1 then
        out[#out + 1] = ","
      end
      out[#out + 1] = quote(names[i])
      out[#out + 1] = ":"
      write(v[names[i]], out)
    end
    out[#out + 1] = "}"
  end
end

--- The compact text of a JSON value tree: no spaces, no trailing newline (spec 1c).
function json.encode(tree)
  local out = {}
  write(tree, out)
  return concat(out)
end

---------------------------------------------------------------------------------------------------
-- Text → Lua value (jsoncpp's CharReader with default settings)
---------------------------------------------------------------------------------------------------
-- Each parse function takes the text and a position and returns the value and the position after
-- it, or nothing at all when the text is not JSON. Values can be nil (JSON null), so success is
-- told by the position. No error is raised and no pcall is used: a limit error raised by the
-- instruction hook during a parse must reach the script, not be taken for bad JSON.

--- Whitespace and comments (// to the end of the line, /* … */). Nothing when a comment is open.
local function skip(s, i)
  while true do
    i = find(s, "[^ \t\r\n]", i)
    if i == nil then
      return #s + 1
    end
    local two = sub(s, i, i + 1)
    if two == "//" then
      i = find(s, "[\r\n]", i + 2)
      if i == nil then
        return #s + 1
      end
    elseif two == "/*" then
      local close = find(s, "*/", i + 2, true)
      if close == nil then
        return nil
      end
      i = close + 2
    else
      return i
    end
  end
end

--- Orthanc's PushJson: every number is a Lua float (``lua_pushnumber``), so `2` reads as `2.0`.
local function lua_number(x)
  return x + 0.0
end

--- jsoncpp scans digits, an optional fraction and an optional exponent, all possibly empty ("01",
-- "1." and "-" are accepted: "-" reads as 0), and only then checks that the text is a number.
local function parse_number(s, i)
  local j = match(s, "^%-?%d*()", i)
  j = match(s, "^%.%d*()", j) or j
  j = match(s, "^[eE][+-]?%d*()", j) or j
  local text = sub(s, i, j - 1)
  if text == "-" then
    return 0, j
  end
  local number = tonumber(text)
  if number == nil then
    return nil
  end
  return lua_number(number), j
end

local SIMPLE_ESCAPES = {
  ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t",
}

--- A string literal starting at the quote at `i`. Raw control characters and invalid UTF-8 are
-- kept byte for byte (jsoncpp does not check them). A high surrogate escape must be followed by a
-- second \u escape, whose low 10 bits complete it whatever its value (jsoncpp's arithmetic).
local function parse_string(s, i)
  local parts, j = {}, i + 1
  while true do
    local k = find(s, '["\\]', j)
    if k == nil then
      return nil
    end
    parts[#parts + 1] = sub(s, j, k - 1)
    if byte(s, k) == 0x22 then
      return concat(parts), k + 1
    end
    local letter = sub(s, k + 1, k + 1)
    if letter == "u" then
      local hex = match(s, "^%x%x%x%x", k + 2)
      if hex == nil then
        return nil
      end
      local cp = tonumber(hex, 16)
      j = k + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local low = match(s, "^\\u(%x%x%x%x)", j)
        if low == nil then
          return nil
        end
        cp = 0x10000 + ((cp & 0x3FF) << 10) + (tonumber(low, 16) & 0x3FF)
        j = j + 6
      end
      parts[#parts + 1] = utf8_char(cp)
    else
      local char = SIMPLE_ESCAPES[letter]
      if char == nil then
        return nil
      end
      parts[#parts + 1] = char
      j = k + 2
    end
  end
end

local parse_value

--- Members in any order; a later duplicate wins, and a null member is simply absent. A comma
-- before the closing brace is accepted (jsoncpp's allowTrailingCommas).
local function parse_object(s, i, depth)
  local object = {}
  i = skip(s, i + 1)
  if i and sub(s, i, i) == "}" then
    return object, i + 1
  end
  while i do
    if sub(s, i, i) ~= '"' then
      return nil
    end
    local name
    name, i = parse_string(s, i)
    i = i and skip(s, i)
    if not i or sub(s, i, i) ~= ":" then
      return nil
    end
    local value
    value, i = parse_value(s, skip(s, i + 1), depth)
    if not i then
      return nil
    end
    object[name] = value
    i = skip(s, i)
    local separator = i and sub(s, i, i)
    if separator == "}" then
      return object, i + 1
    elseif separator ~= "," then
      return nil
    end
    i = skip(s, i + 1)
    if i and sub(s, i, i) == "}" then
      return object, i + 1
    end
  end
end

--- Items 1..n; a null item leaves a hole, as in Orthanc. A trailing comma is accepted.
local function parse_array(s, i, depth)
  local array, count = {}, 0
  i = skip(s, i + 1)
  if i and sub(s, i, i) == "]" then
    return array, i + 1
  end
  while i do
    local value
    value, i = parse_value(s, i, depth)
    if not i then
      return nil
    end
    count = count + 1
    array[count] = value
    i = skip(s, i)
    local separator = i and sub(s, i, i)
    if separator == "]" then
      return array, i + 1
    elseif separator ~= "," then
      return nil
    end
    i = skip(s, i + 1)
    if i and sub(s, i, i) == "]" then
      return array, i + 1
    end
  end
end

local LITERALS = { t = { "true", true }, f = { "false", false }, n = { "null", nil } }

function parse_value(s, i, depth)
  if not i then
    return nil
  end
  local c = sub(s, i, i)
  if c == "{" or c == "[" then
    if depth >= MAX_PARSE_DEPTH then
      return nil
    end
    return (c == "{" and parse_object or parse_array)(s, i, depth + 1)
  elseif c == '"' then
    return parse_string(s, i)
  elseif c == "-" or find(c, "^%d") then
    return parse_number(s, i)
  end
  local literal = LITERALS[c]
  if literal and sub(s, i, i + #literal[1] - 1) == literal[1] then
    return literal[2], i + #literal[1]
  end
  return nil
end

--- The Lua value of a JSON text, or nil when it is not JSON (spec 1d). Lenient like jsoncpp:
-- comments, any root, text after the first value ignored; a leading UTF-8 BOM is skipped, and the
-- text ends at the first NUL byte (Orthanc reads it as a C string).
function json.decode(text)
  local nul = find(text, "\0", 1, true)
  if nul then
    text = sub(text, 1, nul - 1)
  end
  local start = sub(text, 1, 3) == "\239\187\191" and 4 or 1
  local value = parse_value(text, skip(text, start), 0)
  return value
end

return json
