// Verifies an access token the way a Node resource server would, with the unmodified `jose`
// library: the keys from the service's JWKS URL, and issuer, audience and `typ: at+jwt`
// checked. Prints one JSON line: {"ok":true,"sub":…,"kid":…} or {"ok":false,"code":…}.
//
//   node jose_verify.mjs JWKS_URL TOKEN ISSUER AUDIENCE
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUrl, token, issuer, audience] = process.argv.slice(2);
const keys = createRemoteJWKSet(new URL(jwksUrl));
try {
  const { payload, protectedHeader } = await jwtVerify(token, keys, {
    issuer,
    audience,
    typ: 'at+jwt',
    algorithms: ['EdDSA', 'ES256'],
  });
  console.log(JSON.stringify({ ok: true, sub: payload.sub, kid: protectedHeader.kid }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, code: e.code ?? String(e) }));
}
