--- Orthanc's job-building helpers (Toolbox.lua; spec sections 3 and 4), and `_CallWithJob`, which
-- runs a callback with its job in one round trip.
--
-- The helpers only record operations in the global `_job` of the script environment; the broker
-- submits them as one "Lua" job after OnStoredInstance (or OnStable*) returns. They behave as
-- Orthanc's, return values and messages included: SendToModality, SendToPeer and CallSystem return
-- their resource id, ModifyInstance returns '' ("the output of the previous operation"), Delete
-- returns nil. Called from anywhere else (execute-script, another callback) they add to a table
-- that is never submitted, or raise if no callback has initialised `_job` yet, as in Orthanc.
-- One deviation: an error names the line of the script that called the helper (level 2), not a
-- line of Toolbox.lua.

local import = ...

local error, rawget, type = error, rawget, type
local insert = table.insert

local jobs = {}

--- The helpers, as globals of the script environment `env`.
function jobs.functions(env)
  local function append(operation)
    insert(env._job, operation)  -- `_job` nil: "bad argument #1 to 'insert' (table expected, got nil)"
  end

  local function initialize_job()
    env._job = {}
  end

  local function access_job()
    return env._job
  end

  local function send_to_modality(resourceId, modality, localAet)
    if resourceId == nil then
      error('Cannot send a nonexistent resource', 2)
    end
    append({ Operation = 'store-scu', Resource = resourceId, Modality = modality, LocalAet = localAet })
    return resourceId
  end

  local function send_to_peer(resourceId, peer)
    if resourceId == nil then
      error('Cannot send a nonexistent resource', 2)
    end
    append({ Operation = 'store-peer', Resource = resourceId, Peer = peer })
    return resourceId
  end

  local function delete(resourceId)
    if resourceId == nil then
      error('Cannot delete a nonexistent resource', 2)
    end
    append({ Operation = 'delete', Resource = resourceId })
    return nil  -- forbid chaining
  end

  local function modify_resource(resourceId, replacements, removals, removePrivateTags)
    if resourceId == nil then
      error('Cannot modify a nonexistent resource', 2)
    end
    if resourceId == '' then
      error('Cannot modify twice an resource', 2)
    end
    append({ Operation = 'modify', Resource = resourceId, Replace = replacements, Remove = removals,
             RemovePrivateTags = removePrivateTags })
    return ''  -- chain with the next operation
  end

  local function modify_instance(resourceId, replacements, removals, removePrivateTags)
    return env.ModifyResource(resourceId, replacements, removals, removePrivateTags)
  end

  local function call_system(resourceId, command, args)
    if resourceId == nil then
      error('Cannot execute a system call on a nonexistent resource', 2)
    end
    if command == nil then
      error('No command was specified for system call', 2)
    end
    append({ Operation = 'call-system', Resource = resourceId, Command = command, Arguments = args })
    return resourceId
  end

  --- `_CallWithJob(name, ...)`: what Orthanc does around OnStoredInstance and OnStable*, in one call:
  -- `_InitializeJob()`, the callback, then `_AccessJob()` as the result (converted by the shim with
  -- keepStrings=false, as Orthanc's SubmitJob reads it). `false` when the callback is not a function
  -- (nothing ran). An error in the callback propagates: the broker discards the job.
  local function call_with_job(name, ...)
    local callback = rawget(env, name)
    if type(callback) ~= 'function' then
      return false
    end
    env._InitializeJob()
    callback(...)
    return env._AccessJob()
  end

  return {
    _InitializeJob = initialize_job,
    _AccessJob = access_job,
    SendToModality = send_to_modality,
    SendToPeer = send_to_peer,
    Delete = delete,
    ModifyResource = modify_resource,
    ModifyInstance = modify_instance,
    CallSystem = call_system,
    _CallWithJob = call_with_job,
  }
end

return jobs
