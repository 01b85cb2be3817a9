-- GET /orders/<id>, ids drawn uniformly from 1..N (wrk argument N, default 1000). The random
-- sequence is seeded by thread number only, so every server gets the same sequence of ids.
-- Optional arguments 2 and 3: the path before and after the id (default "/orders/" and ""),
-- for services whose URLs differ (e.g. Django REST framework's "/orders/<id>/").
dofile("report.lua")

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

local max_id
local prefix
local suffix

function init(args)
  max_id = tonumber(args[1]) or 1000
  prefix = args[2] or "/orders/"
  suffix = args[3] or ""
  math.randomseed(thread_number * 1000003)
end

function request()
  return wrk.format("GET", prefix .. math.random(max_id) .. suffix)
end
