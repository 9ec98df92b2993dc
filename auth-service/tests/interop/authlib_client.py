"""Drives the service's OAuth endpoints with the unmodified Authlib client (requests
integration), as a Python application would: reads the discovery metadata, gets tokens
with the password grant (client_secret_basic), refreshes them, introspects them as a
resource server (client_secret_post), and revokes them. Prints one JSON object of what it
saw; the Rust test judges it.

    python authlib_client.py PUBLIC_URL APP_ID APP_SECRET RS_ID RS_SECRET USERNAME PASSWORD \
        WORKER_ID WORKER_SECRET

It also gets a machine token with the client-credentials grant, introspects it, and has
its client revoke it (another client's attempt is refused).
"""
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

public, app_id, app_secret, rs_id, rs_secret, username, password, worker_id, worker_secret = sys.argv[1:10]
seen = {}

meta = AuthorizationServerMetadata(requests.get(f"{public}/.well-known/oauth-authorization-server").json())
seen["grant_types"] = meta.get("grant_types_supported")
token_url = meta["token_endpoint"]

app = OAuth2Session(app_id, app_secret, token_endpoint_auth_method="client_secret_basic")
token = app.fetch_token(token_url, grant_type="password", username=username, password=password)
seen["token_type"] = token["token_type"]
seen["has_refresh_token"] = bool(token.get("refresh_token"))

refreshed = app.refresh_token(token_url, refresh_token=token["refresh_token"])
seen["refresh_rotated"] = refreshed["refresh_token"] != token["refresh_token"]

rs = OAuth2Session(rs_id, rs_secret, token_endpoint_auth_method="client_secret_post")
introspect = meta["introspection_endpoint"]
seen["access_active"] = rs.introspect_token(introspect, token=refreshed["access_token"]).json()
seen["old_refresh_active"] = rs.introspect_token(introspect, token=token["refresh_token"]).json()["active"]

app.revoke_token(meta["revocation_endpoint"], token=refreshed["refresh_token"])
seen["after_revoke_active"] = rs.introspect_token(introspect, token=refreshed["access_token"]).json()["active"]

try:
    app.refresh_token(token_url, refresh_token=refreshed["refresh_token"])
    seen["refresh_after_revoke"] = "accepted"
except Exception as e:  # authlib raises OAuthError with the server's error code
    seen["refresh_after_revoke"] = getattr(e, "error", str(e))

worker = OAuth2Session(worker_id, worker_secret, scope="reports:read")
machine = worker.fetch_token(token_url, grant_type="client_credentials")
seen["machine_scope"] = machine.get("scope")
seen["machine_has_refresh_token"] = "refresh_token" in machine
seen["machine_introspected"] = rs.introspect_token(introspect, token=machine["access_token"]).json()

# Another client may not revoke the worker's token; the worker may.
refused = app.revoke_token(meta["revocation_endpoint"], token=machine["access_token"])
seen["machine_revoked_by_other"] = [refused.status_code, refused.json().get("error")]
seen["machine_active_after_refusal"] = rs.introspect_token(introspect, token=machine["access_token"]).json()["active"]
revoked = worker.revoke_token(meta["revocation_endpoint"], token=machine["access_token"])
seen["machine_revoked_by_owner"] = revoked.status_code
seen["machine_after_revoke"] = rs.introspect_token(introspect, token=machine["access_token"]).json()

print(json.dumps(seen))
