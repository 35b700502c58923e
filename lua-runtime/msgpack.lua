--- The shim's msgpack codec, on string.pack/string.unpack (design.md, "The wire").
--
-- Encodes JSON value trees (json.lua) and the frames the shim builds around them:
--   nil and json.null → nil; booleans; integers in their smallest format; floats always as float64;
--   a string that is valid UTF-8 → str, any other → bin (the broker keeps str and bytes apart);
--   a json.array → an array of exactly `n` items (nil items included); any other table → a map.
-- Decodes str and bin alike to Lua strings, integers to integers and floats to floats, arrays to
-- tables 1..n (a nil item leaves a hole) and maps to tables.
-- The payload is trusted no more than it must be: nesting is capped and no container may claim more
-- items than there are bytes left, so a bad frame costs an error, never a huge allocation.

local import = ...
local json = import("json")

local byte, format, pack, sub, unpack = string.byte, string.format, string.pack, string.sub, string.unpack
local concat = table.concat
local math_type = math.type
local utf8_len = utf8.len
local error, getmetatable, next, setmetatable, type = error, getmetatable, next, setmetatable, type
local is_array, null = json.is_array, json.null

local msgpack = {}

--- Marks bytes that are already msgpack (a result encoded inside its call, under its limits).
local Raw = { __name = "msgpack.raw" }

function msgpack.raw(bytes)
  return setmetatable({ bytes }, Raw)
end

--- Nesting cap, in both directions.
local MAX_DEPTH = 64

---------------------------------------------------------------------------------------------------
-- Encoding
---------------------------------------------------------------------------------------------------

local function integer_bytes(n)
  if n >= 0 then
    if n < 0x80 then
      return pack("B", n)
    elseif n < 0x100 then
      return pack(">BB", 0xcc, n)
    elseif n < 0x10000 then
      return pack(">BI2", 0xcd, n)
    elseif n < 0x100000000 then
      return pack(">BI4", 0xce, n)
    end
    return pack(">BI8", 0xcf, n)
  elseif n >= -32 then
    return pack("b", n)
  elseif n >= -0x80 then
    return pack(">Bb", 0xd0, n)
  elseif n >= -0x8000 then
    return pack(">Bi2", 0xd1, n)
  elseif n >= -0x80000000 then
    return pack(">Bi4", 0xd2, n)
  end
  return pack(">Bi8", 0xd3, n)
end

local function string_header(length)
  if length < 32 then
    return pack("B", 0xa0 | length)
  elseif length < 0x100 then
    return pack(">BB", 0xd9, length)
  elseif length < 0x10000 then
    return pack(">BI2", 0xda, length)
  end
  return pack(">BI4", 0xdb, length)
end

local function binary_header(length)
  if length < 0x100 then
    return pack(">BB", 0xc4, length)
  elseif length < 0x10000 then
    return pack(">BI2", 0xc5, length)
  end
  return pack(">BI4", 0xc6, length)
end

local function container_header(count, fix, tag16, tag32)
  if count < 16 then
    return pack("B", fix | count)
  elseif count < 0x10000 then
    return pack(">BI2", tag16, count)
  end
  return pack(">BI4", tag32, count)
end

local function encode_value(v, out, depth)
  local kind = type(v)
  if kind == "string" then
    out[#out + 1] = utf8_len(v) and string_header(#v) or binary_header(#v)
    out[#out + 1] = v
  elseif kind == "number" then
    out[#out + 1] = math_type(v) == "integer" and integer_bytes(v) or pack(">Bd", 0xcb, v)
  elseif kind == "boolean" then
    out[#out + 1] = v and "\xc3" or "\xc2"
  elseif v == nil or v == null then
    out[#out + 1] = "\xc0"
  elseif kind ~= "table" then
    error("msgpack: cannot encode a " .. kind, 0)
  elseif getmetatable(v) == Raw then
    out[#out + 1] = v[1]
  elseif depth >= MAX_DEPTH then
    error("msgpack: more than " .. MAX_DEPTH .. " nested containers", 0)
  elseif is_array(v) then
    out[#out + 1] = container_header(v.n, 0x90, 0xdc, 0xdd)
    for i = 1, v.n do
      encode_value(v[i], out, depth + 1)
    end
  else
    local count = 0
    for _ in next, v do
      count = count + 1
    end
    out[#out + 1] = container_header(count, 0x80, 0xde, 0xdf)
    for key, value in next, v do
      encode_value(key, out, depth + 1)
      encode_value(value, out, depth + 1)
    end
  end
end

--- The msgpack bytes of `v`, or nil and a reason when they would exceed `max_bytes`.
-- Raises only on what the shim never builds: a function or userdata, or a cycle.
function msgpack.encode(v, max_bytes)
  local out = {}
  encode_value(v, out, 0)
  local size = 0
  for i = 1, #out do
    size = size + #out[i]
  end
  if size > max_bytes then
    return nil, size .. " bytes exceed the frame limit of " .. max_bytes .. " bytes"
  end
  return concat(out)
end

---------------------------------------------------------------------------------------------------
-- Decoding
---------------------------------------------------------------------------------------------------

local decode_value

local function take(s, i, length)
  local stop = i + length - 1
  if stop > #s then
    error("msgpack: a string runs past the end of the frame", 0)
  end
  return sub(s, i, stop), stop + 1
end

local function decode_array(s, i, count, depth)
  if count > #s - i + 1 then
    error("msgpack: an array claims more items than the frame holds", 0)
  end
  local array = {}
  for index = 1, count do
    array[index], i = decode_value(s, i, depth)
  end
  return array, i
end

local function decode_map(s, i, count, depth)
  if count > #s - i + 1 then
    error("msgpack: a map claims more entries than the frame holds", 0)
  end
  local map = {}
  for _ = 1, count do
    local key, value
    key, i = decode_value(s, i, depth)
    if key == nil then
      error("msgpack: a map has a nil key", 0)
    end
    value, i = decode_value(s, i, depth)
    map[key] = value
  end
  return map, i
end

--- An unsigned 64-bit value above math.maxinteger wraps negative in string.unpack: make it a float.
local function uint64(s, i)
  local n, after = unpack(">I8", s, i)
  if n < 0 then
    n = n + 18446744073709551616.0
  end
  return n, after
end

--- Decoders of the tags 0xc0..0xdf, each given the text and the position after the tag byte.
local TAGGED = {
  [0xc0] = function(_, i) return nil, i end,
  [0xc2] = function(_, i) return false, i end,
  [0xc3] = function(_, i) return true, i end,
  [0xc4] = function(s, i) return take(s, i + 1, unpack("B", s, i)) end,
  [0xc5] = function(s, i) return take(s, i + 2, unpack(">I2", s, i)) end,
  [0xc6] = function(s, i) return take(s, i + 4, unpack(">I4", s, i)) end,
  [0xca] = function(s, i) return unpack(">f", s, i) end,
  [0xcb] = function(s, i) return unpack(">d", s, i) end,
  [0xcc] = function(s, i) return unpack("B", s, i) end,
  [0xcd] = function(s, i) return unpack(">I2", s, i) end,
  [0xce] = function(s, i) return unpack(">I4", s, i) end,
  [0xcf] = uint64,
  [0xd0] = function(s, i) return unpack("b", s, i) end,
  [0xd1] = function(s, i) return unpack(">i2", s, i) end,
  [0xd2] = function(s, i) return unpack(">i4", s, i) end,
  [0xd3] = function(s, i) return unpack(">i8", s, i) end,
  [0xd9] = function(s, i) return take(s, i + 1, unpack("B", s, i)) end,
  [0xda] = function(s, i) return take(s, i + 2, unpack(">I2", s, i)) end,
  [0xdb] = function(s, i) return take(s, i + 4, unpack(">I4", s, i)) end,
  [0xdc] = function(s, i, depth) return decode_array(s, i + 2, unpack(">I2", s, i), depth) end,
  [0xdd] = function(s, i, depth) return decode_array(s, i + 4, unpack(">I4", s, i), depth) end,
  [0xde] = function(s, i, depth) return decode_map(s, i + 2, unpack(">I2", s, i), depth) end,
  [0xdf] = function(s, i, depth) return decode_map(s, i + 4, unpack(">I4", s, i), depth) end,
}

--- The value starting at `i` and the position after it. `depth` counts the enclosing containers.
function decode_value(s, i, depth)
  local tag = byte(s, i)
  if tag == nil then
    error("msgpack: the frame ends in the middle of a value", 0)
  elseif tag < 0x80 then
    return tag, i + 1
  elseif tag >= 0xe0 then
    return tag - 0x100, i + 1
  elseif tag >= 0xa0 and tag < 0xc0 then
    return take(s, i + 1, tag & 0x1f)
  elseif tag < 0xa0 or tag >= 0xdc then
    if depth >= MAX_DEPTH then
      error("msgpack: more than " .. MAX_DEPTH .. " nested containers", 0)
    end
    if tag < 0x90 then
      return decode_map(s, i + 1, tag & 0x0f, depth + 1)
    elseif tag < 0xa0 then
      return decode_array(s, i + 1, tag & 0x0f, depth + 1)
    end
  end
  local decoder = TAGGED[tag]
  if decoder == nil then
    error(format("msgpack: unsupported type byte 0x%02x", tag), 0)
  end
  return decoder(s, i + 1, depth + 1)
end

--- The value of a whole payload; raises on malformed or trailing bytes.
function msgpack.decode(payload)
  local value, after = decode_value(payload, 1, 0)
  if after <= #payload then
    error("msgpack: " .. (#payload - after + 1) .. " bytes after the value", 0)
  end
  return value
end

return msgpack
