// A real OpenID Connect provider for tests/oidc_sign_in.rs: panva's oidc-provider (OpenID
// Certified), with its development sign-in pages (any user name and password sign in), one
// public client that must use PKCE, and JWT access tokens for the resource `tramy` that carry
// the claims a facility's Keycloak would: `facility` and `realm_access.roles`. The user name
// chooses them: `FACILITY.role.name` (e.g. `LOCAL.clinician.lan`).
//
// It signs with the test suite's provider key (an ES256 key in PEM, kid `realm-key-1`), whose
// public half tramy reads from a file, so tramy can start before the provider does.
//
// usage: node provider.mjs PORT REDIRECT_URI KEY_PEM_FILE
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, redirectUri, keyFile] = process.argv.slice(2);
const signingKey = {
  ...createPrivateKey(readFileSync(keyFile)).export({ format: 'jwk' }),
  kid: 'realm-key-1',
  use: 'sig',
  alg: 'ES256',
};
const issuer = `http://127.0.0.1:${port}`;

const claimsOf = (accountId) => {
  const [facility, role] = String(accountId).split('.');
  return { facility, realm_access: { roles: [role] } };
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'tramy',
      token_endpoint_auth_method: 'none',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: 'ES256',
    },
  ],
  jwks: { keys: [signingKey] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:tramy',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'openid',
        audience: 'tramy',
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  extraTokenClaims: (ctx, token) => claimsOf(token.accountId),
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));
