--- The built-ins that run in the broker. sandbox.lua turns each name into a global stub that sends
-- an `rpc` frame and waits for the `reply`; broker/scripting/builtins.py implements the same names
-- (the `ready` frame lists these, so the broker can check that both sides agree).
local names = {
  "RestApiGet",
  "RestApiPost",
  "RestApiPut",
  "RestApiDelete",
  "GetOrthancConfiguration",
  "GetCurrentEvent",
  "HttpGet",
  "HttpPost",
  "HttpPut",
  "HttpDelete",
  "SetHttpCredentials",
  "SetHttpTimeout",
}

--- The built-ins that return no value at all, as Orthanc's (`select('#', SetHttpTimeout(5))` is 0).
names.no_result = { SetHttpCredentials = true, SetHttpTimeout = true }

return names
