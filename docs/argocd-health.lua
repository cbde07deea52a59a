-- Argo CD health check for RecOp's RecModel, ModelVersion and ABTest (one script for
-- the three kinds: install it under each kind's key, see docs/gitops.md).
-- Argo CD runs it with gopher-lua (Lua 5.1) and the live object in `obj`.
-- tests/test_argocd_health.py runs it against statuses the controllers produce.

-- Healthy phases, per kind (status.phase): "serving" ones also need the Ready
-- condition not to be False; "done" ones are final (a superseded version did its job,
-- a concluded test reached its verdict) whatever Ready says.
local HEALTHY = {
  RecModel = {Ready = "serving"},
  ModelVersion = {Active = "serving", Superseded = "done"},
  ABTest = {Running = "serving", Concluded = "done"},
}
local DEGRADED = {
  RecModel = {Degraded = true, Failed = true},
  -- Rolled back: the model serves the last clean version, not this one.
  ModelVersion = {Failed = true, RolledBack = true},
  ABTest = {Failed = true},
}
-- Stopped by hand or by a guardrail: nothing is wrong with the object, nothing runs.
local SUSPENDED = {ABTest = {Stopped = true}}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- A condition counts only if it speaks of the current spec.
local function holds(c, generation)
  return c ~= nil and c.status == "True"
    and (c.observedGeneration == nil or c.observedGeneration == generation)
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local hs = {status = "Progressing", message = "waiting for RecOp to report a status"}
local status = obj.status
local kind = obj.kind
if status == nil or status.phase == nil or HEALTHY[kind] == nil then
  return hs
end
local generation = obj.metadata.generation
local phase = status.phase
if generation ~= nil and status.observedGeneration ~= generation then
  hs.message = "RecOp has not yet acted on generation " .. generation
  return hs
end

local ready = condition(status, "Ready")
local degraded = condition(status, "Degraded")
local progressing = condition(status, "Progressing")
if holds(degraded, generation) or DEGRADED[kind][phase] then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. text(degraded, text(ready, "see the object's events"))
elseif SUSPENDED[kind] ~= nil and SUSPENDED[kind][phase] then
  hs.status = "Suspended"
  hs.message = phase .. ": " .. text(ready, "stopped")
elseif HEALTHY[kind][phase] == "done"
    or (HEALTHY[kind][phase] == "serving" and (ready == nil or ready.status ~= "False")) then
  hs.status = "Healthy"
  hs.message = phase .. ": " .. text(ready, "settled")
else
  hs.message = phase .. ": " .. text(progressing, text(ready, "in progress"))
end
return hs
