-- POST /orders {"customer": ..., "email": ...}: the email is unique per request, made of the run
-- tag (wrk argument), the thread number and a per-thread counter. Optional argument 2: the
-- path (default "/orders"), for services whose URLs differ (e.g. "/orders/").
dofile("report.lua")

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

local tag
local path
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  tag = args[1] or "run"
  path = args[2] or "/orders"
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"customer": "bench customer", "email": "%s-%d-%d@example.com"}', tag, thread_number, counter)
  return wrk.format("POST", path, headers, body)
end
