-- GET on the URL given to wrk (/health): the same request every time.
dofile("report.lua")
