// The node peer of the authnz benchmark: an OpenID Connect relying party on openid-client 6 and
// express, doing per login what authnz does (state, nonce and PKCE; code exchange; ID-token
// claims *and* signature checks; userinfo; user upsert; session), with everything in memory.
//
//     node app.mjs PORT ISSUER        (or PORT=... ISSUER=... node app.mjs)
//
// Client `bench` / `bench-secret` (client_secret_basic). Listens on 127.0.0.1:PORT once the
// issuer's discovery has succeeded. Routes: GET /login, GET /callback, GET /me, GET /healthz.
import { randomBytes, randomUUID } from 'node:crypto';
import process from 'node:process';

import express from 'express';
import * as client from 'openid-client';

const PORT = Number(process.argv[2] ?? process.env.PORT);
const ISSUER = process.argv[3] ?? process.env.ISSUER;
if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535 || !ISSUER) {
  console.error('usage: node app.mjs PORT ISSUER   (or PORT=... ISSUER=... node app.mjs)');
  process.exit(2);
}

const CLIENT_ID = 'bench';
const CLIENT_SECRET = 'bench-secret';
const REDIRECT_URI = `http://127.0.0.1:${PORT}/callback`;
const BASE = `http://127.0.0.1:${PORT}`;
const SCOPE = 'openid email profile';
const LOGIN_COOKIE = 'peer_login';
const SESSION_COOKIE = 'peer_session';
const LOGIN_TTL_MS = 10 * 60 * 1000; // like authnz: a sign-in must finish within 10 minutes
const SESSION_TTL_MS = 24 * 60 * 60 * 1000;

// --- In-memory stores -------------------------------------------------------------------------
/** cookie value -> { state, nonce, verifier, createdAt } (single use) */
const pendingLogins = new Map();
/** `${iss}|${sub}` -> { id, iss, sub, email, created_at, last_login_at } */
const users = new Map();
/** cookie value -> { userKey, expiresAt } */
const sessions = new Map();

// Expired pending logins and sessions are swept once a minute (a Map keeps insertion order, so
// the oldest come first and the sweep stops at the first live one).
function sweep(map, isExpired) {
  for (const [key, value] of map) {
    if (!isExpired(value)) break;
    map.delete(key);
  }
}
setInterval(() => {
  const now = Date.now();
  sweep(pendingLogins, (p) => now - p.createdAt > LOGIN_TTL_MS);
  sweep(sessions, (s) => s.expiresAt <= now);
}, 60_000).unref();

const newId = () => randomBytes(32).toString('base64url');

function cookie(req, name) {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function userView(user) {
  return {
    id: user.id,
    iss: user.iss,
    sub: user.sub,
    email: user.email,
    created_at: user.created_at,
    last_login_at: user.last_login_at,
  };
}

const fail = (res, status, error, description) =>
  res.status(status).json({ error, error_description: description });

// --- Discovery (before listening) ------------------------------------------------------------
let config;
try {
  config = await client.discovery(
    new URL(ISSUER),
    CLIENT_ID,
    CLIENT_SECRET,
    client.ClientSecretBasic(CLIENT_SECRET),
    // The stub IdP is plain http on loopback.
    { execute: [client.allowInsecureRequests] },
  );
} catch (err) {
  console.error(`peer: discovery of ${ISSUER} failed: ${err?.message ?? err}`);
  process.exit(1);
}
// openid-client 6 otherwise trusts the token endpoint's TLS and checks only the ID token's claims;
// this also verifies the ID token's JWS signature against the issuer's jwks_uri (as authnz does).
client.enableNonRepudiationChecks(config);
const issuer = config.serverMetadata().issuer;

// --- Routes ----------------------------------------------------------------------------------
const app = express();
app.disable('x-powered-by');
app.disable('etag');

app.get('/login', async (req, res) => {
  try {
    const state = client.randomState();
    const nonce = client.randomNonce();
    const verifier = client.randomPKCECodeVerifier();
    const challenge = await client.calculatePKCECodeChallenge(verifier);
    const id = newId();
    pendingLogins.set(id, { state, nonce, verifier, createdAt: Date.now() });
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT_URI,
      scope: SCOPE,
      state,
      nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    });
    res.set('Set-Cookie', `${LOGIN_COOKIE}=${id}; HttpOnly; Path=/; SameSite=Lax`);
    res.json({ redirect_uri: url.href });
  } catch (err) {
    console.error(`peer: login failed: ${err?.message ?? err}`);
    fail(res, 500, 'internal', 'could not start the sign-in');
  }
});

app.get('/callback', async (req, res) => {
  // Single use: the pending login is removed now, whatever happens next.
  const id = cookie(req, LOGIN_COOKIE);
  const pending = id === undefined ? undefined : pendingLogins.get(id);
  if (!pending) return fail(res, 400, 'invalid_state', 'this sign-in is unknown or was already used');
  pendingLogins.delete(id);
  if (Date.now() - pending.createdAt > LOGIN_TTL_MS) {
    return fail(res, 400, 'expired_state', 'this sign-in took too long and expired');
  }

  // The browser's part, refused with 400 before anything is sent to the IdP. openid-client checks
  // all of this again; these checks only tell the client's errors from the IdP's (502).
  const { code, state, iss, error } = req.query;
  for (const [name, value] of Object.entries(req.query)) {
    if (typeof value !== 'string') return fail(res, 400, 'duplicate_parameter', `${name} given twice`);
  }
  if (state !== pending.state) return fail(res, 400, 'state_mismatch', 'the state does not match');
  if (error !== undefined) return fail(res, 400, 'idp_error', `the identity provider reported: ${error}`);
  if (iss !== undefined && iss !== issuer) return fail(res, 400, 'issuer_mismatch', 'wrong issuer');
  if (!code) return fail(res, 400, 'missing_code', 'the callback has no authorization code');

  try {
    const tokens = await client.authorizationCodeGrant(config, new URL(req.originalUrl, BASE), {
      pkceCodeVerifier: pending.verifier,
      expectedState: pending.state,
      expectedNonce: pending.nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);

    const key = `${claims.iss}|${claims.sub}`;
    const now = Math.floor(Date.now() / 1000);
    const email = info.email ?? claims.email ?? null;
    let user = users.get(key);
    if (user) {
      user.email = email;
      user.last_login_at = now;
    } else {
      user = { id: randomUUID(), iss: claims.iss, sub: claims.sub, email, created_at: now, last_login_at: now };
      users.set(key, user);
    }

    const sessionId = newId();
    sessions.set(sessionId, { userKey: key, expiresAt: Date.now() + SESSION_TTL_MS });
    res.set('Set-Cookie', `${SESSION_COOKIE}=${sessionId}; HttpOnly; Path=/`);
    res.json({ user: userView(user) });
  } catch (err) {
    const why = [err?.message ?? String(err), err?.cause?.message].filter(Boolean).join(': ');
    console.error(`peer: callback failed: ${why}`);
    fail(res, 502, 'idp_failed', `the sign-in with the identity provider failed: ${why}`);
  }
});

app.get('/me', (req, res) => {
  const id = cookie(req, SESSION_COOKIE);
  const session = id === undefined ? undefined : sessions.get(id);
  if (!session || session.expiresAt <= Date.now()) {
    return fail(res, 401, 'unauthenticated', 'no valid session');
  }
  const user = users.get(session.userKey);
  if (!user) return fail(res, 401, 'unauthenticated', 'no valid session');
  res.json(userView(user));
});

app.get('/healthz', (req, res) => {
  res.type('text/plain').send('ok');
});

app.use((req, res) => fail(res, 404, 'not_found', 'no such route'));
// Anything thrown that a handler did not catch (malformed URLs and the like): JSON, never a crash.
app.use((err, req, res, _next) => {
  console.error(`peer: ${err?.message ?? err}`);
  if (res.headersSent) return res.end();
  fail(res, err?.status >= 400 && err?.status < 500 ? err.status : 500, 'error', 'request failed');
});

process.on('unhandledRejection', (err) => console.error(`peer: unhandled rejection: ${err?.message ?? err}`));

// Express 5 hands a listen error (port taken) to this callback.
app.listen(PORT, '127.0.0.1', (err) => {
  if (err) {
    console.error(`peer: cannot listen on 127.0.0.1:${PORT}: ${err.message}`);
    process.exit(1);
  }
  console.error(`peer: listening on ${BASE} for ${issuer}`);
});
