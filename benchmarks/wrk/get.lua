-- GET /orders/<id>, ids drawn uniformly from 1..N (wrk argument N, default 1000). The random
-- sequence is seeded by thread number only, so every server gets the same sequence of ids.
dofile("report.lua")

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

local max_id

function init(args)
  max_id = tonumber(args[1]) or 1000
  math.randomseed(thread_number * 1000003)
end

function request()
  return wrk.format("GET", "/orders/" .. math.random(max_id))
end
