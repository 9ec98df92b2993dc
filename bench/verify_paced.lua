-- wrk script: GET /verify with the token in $TOKEN, each connection pausing 10 ms between
-- requests, so it measures latency without adding load of its own.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
function delay()
  return 10
end
