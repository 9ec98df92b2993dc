-- wrk script: log in as the user bench/load.sh registered.
wrk.method = "POST"
wrk.body = '{"username":"bench","password":"correct horse battery"}'
wrk.headers["Content-Type"] = "application/json"
