// Loopback OpenID Provider for authnz integration tests (panva/oidc-provider v9).
//
// Env:
//   PORT           listen port on 127.0.0.1 (default 0 = pick a free port)
//   OIDC_CLIENTS   JSON array of oidc-provider client metadata (required for any login)
//   OIDC_ACCOUNTS  optional JSON object: login -> claim overrides
//   OIDC_CONFORM_ID_TOKEN_CLAIMS=1  put email/profile claims ONLY in userinfo, not in the ID token
//   OIDC_KEEP_ALIVE_WITHOUT_STDIN=1  do not exit when stdin ends (manual runs with </dev/null)
//   OIDC_DPOP_NONCE=1  DPoP proofs must carry a nonce the provider gave
//
// Prints exactly one stdout line, `READY http://127.0.0.1:<port>`, once listening.
// Exits when stdin ends/closes (so a dying test harness takes it down) and on SIGTERM/SIGINT.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const parseEnvJson = (name, fallback) => {
  const raw = process.env[name];
  if (!raw) return fallback;
  try {
    return JSON.parse(raw);
  } catch (err) {
    console.error(`${name} is not valid JSON: ${err.message}`);
    process.exit(2);
  }
};

// oidc-provider prints its "NOTICE" lines with console.info (stdout); keep stdout for READY only.
console.info = console.error;
console.log = console.error;

const clients = parseEnvJson('OIDC_CLIENTS', []);
const accountOverrides = parseEnvJson('OIDC_ACCOUNTS', {});

// Lifecycle: die with the parent.
const exit = () => process.exit(0);
process.on('SIGTERM', exit);
process.on('SIGINT', exit);
if (process.env.OIDC_KEEP_ALIVE_WITHOUT_STDIN !== '1') {
  process.stdin.on('end', exit);
  process.stdin.on('close', exit);
  process.stdin.on('error', exit);
  process.stdin.resume();
}

// Fresh RS256 signing key per run (instead of the built-in development key).
const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = {
  ...(await exportJWK(privateKey)), kid: `test-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig',
};

// The issuer must contain the port, so listen first and build the Provider afterwards.
let handler = (_req, res) => { res.statusCode = 503; res.end(); };
const server = createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomBytes(32).toString('hex'), randomBytes(32).toString('hex')] },

  // Any login name is accepted (the devInteractions password field is ignored).
  async findAccount(_ctx, id) {
    const claims = {
      email: `${id}@example.test`,
      email_verified: true,
      preferred_username: id,
      name: id,
      ...(accountOverrides[id] || {}),
      sub: id, // sub is always the login name
    };
    return { accountId: id, claims: async () => claims };
  },

  scopes: ['openid', 'offline_access', 'email', 'profile'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    // Beyond the standard profile: the claims authnz's providers read (Google hd, Entra tid/oid,
    // Keycloak groups, ORCID names, CILogon idp), released when an account override sets them.
    profile: ['preferred_username', 'name', 'given_name', 'family_name', 'hd', 'tid', 'oid', 'groups', 'idp'],
  },

  // The tests run authnz on loopback, which oidc-provider's SSRF guard refuses to call (for
  // back-channel logout). This provider only ever runs on loopback, so the guard is lifted.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },

  features: {
    devInteractions: { enabled: true }, // built-in login + consent HTML forms
    revocation: { enabled: true },
    userinfo: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    // DPoP for the clients that ask for it (`dpop_bound_access_tokens`); OIDC_DPOP_NONCE=1
    // makes every DPoP request name a nonce the provider gave (a first one is refused).
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      requireNonce: () => process.env.OIDC_DPOP_NONCE === '1',
    },
  },

  // PKCE for every client; v9 only implements S256 (plain is not supported at all).
  pkce: { required: () => true },

  // A refresh token whenever the client may use the refresh_token grant (offline_access optional).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),

  // By default (false here) scope claims are also put in the ID token, not only in userinfo.
  conformIdTokenClaims: process.env.OIDC_CONFORM_ID_TOKEN_CLAIMS === '1',

  // Explicit lifetimes (seconds); also silences the "default ttl" notices.
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 3600,
    Session: 86400,
    Grant: 14 * 86400,
    RefreshToken: 14 * 86400,
  },

  // RFC 9207 `iss` in authorization responses is always on in v9 (no option needed).
  enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
  clientDefaults: { id_token_signed_response_alg: 'RS256' },
});

// Static clients are validated lazily by oidc-provider; fail fast on bad metadata instead.
for (const { client_id: id } of clients) {
  try {
    if (!(await provider.Client.find(id))) throw new Error('not found');
  } catch (err) {
    console.error(`invalid client ${JSON.stringify(id)} in OIDC_CLIENTS: ${err.error_description || err.message}`);
    process.exit(2);
  }
}

// Problems the tests would otherwise never see (stderr; the harness shows it on request).
provider.on('backchannel.error', (_ctx, err) => console.error('backchannel.error:', err.message));
provider.on('server_error', (_ctx, err) => console.error('server_error:', err.message));
handler = provider.callback();
process.stdout.write(`READY ${issuer}\n`);
