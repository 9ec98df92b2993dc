-- wrk script: POST /verify with {"token": $TOKEN} (JSON), optionally authenticated as the
-- client $CLIENT_BASIC (the base64 of "id:secret", sent as X-Client-Authorization).
wrk.method = "POST"
wrk.body = '{"token":"' .. os.getenv("TOKEN") .. '"}'
wrk.headers["Content-Type"] = "application/json"
local basic = os.getenv("CLIENT_BASIC")
if basic and basic ~= "" then
  wrk.headers["X-Client-Authorization"] = "Basic " .. basic
end
