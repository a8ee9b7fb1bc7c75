// Lab OpenID provider: oidc-provider (npm, pinned in ./package.json) with static users and a real login form.
//
// Usage: node provider.mjs CONFIG.json
//   CONFIG = {issuer, host, port, modules_dir, clients: [{client_id, client_secret, redirect_uris}],
//             users: [{username, password, email, name}]}
// modules_dir is the node_modules directory that installers/dev/oidc-setup.sh filled (outside the repo).
// Prints "READY <issuer>" on stdout once listening. Never prints passwords or client secrets.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { default: Provider } = await import(
  pathToFileURL(join(cfg.modules_dir, 'oidc-provider', 'lib', 'index.js')).href
);

const users = new Map(cfg.users.map((u) => [u.username, u]));

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: 'lab-rs256', use: 'sig', alg: 'RS256' };
}

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  jwks: { keys: [signingKey()] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  conformIdTokenClaims: false, // put the scope's claims in the ID token too, not only in userinfo
  features: { devInteractions: { enabled: false } },
  ttl: {
    AccessToken: 600, AuthorizationCode: 60, Grant: 3600, IdToken: 600, Interaction: 600, Session: 3600,
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const u = users.get(sub);
    if (!u) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub, email: u.email, email_verified: true, name: u.name, preferred_username: u.username,
        };
      },
    };
  },
});

function loginPage(uid, clientId, error) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Lab IdP - Sign in</title>
<style>body{font-family:sans-serif;max-width:24em;margin:4em auto}label,input,button{display:block;width:100%;margin:.4em 0}
.err{color:#b00}</style></head>
<body><h1>Lab IdP</h1><p>Sign in to continue to <b>${escapeHtml(clientId)}</b>.</p>
${error ? `<p class="err" id="error">${escapeHtml(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label for="username">Username</label><input id="username" name="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<button id="submit" type="submit">Sign in</button>
</form></body></html>`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16384) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function sendHtml(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

// Consent is implicit for the lab's first-party client: grant exactly what the request asks for.
async function grantConsent(req, res, details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const id = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
}

async function interaction(req, res, url) {
  const parts = url.pathname.split('/').filter(Boolean); // interaction, uid[, login]
  const details = await provider.interactionDetails(req, res);
  if (parts[1] !== details.uid) {
    sendHtml(res, 400, '<p>interaction mismatch</p>');
    return;
  }
  const clientId = details.params.client_id;
  if (req.method === 'GET' && parts.length === 2) {
    if (details.prompt.name === 'consent') {
      await grantConsent(req, res, details);
      return;
    }
    sendHtml(res, 200, loginPage(details.uid, clientId, ''));
    return;
  }
  if (req.method === 'POST' && parts[2] === 'login') {
    const form = await readForm(req);
    const u = users.get(form.get('username') || '');
    if (!u || form.get('password') !== u.password) {
      console.log(`login failed for ${JSON.stringify(form.get('username') || '')}`);
      sendHtml(res, 401, loginPage(details.uid, clientId, 'Invalid username or password.'));
      return;
    }
    console.log(`login ok for ${JSON.stringify(u.username)}`);
    await provider.interactionFinished(req, res, { login: { accountId: u.username } },
      { mergeWithLastSubmission: false });
    return;
  }
  sendHtml(res, 404, '<p>not found</p>');
}

const handler = provider.callback();
const server = createServer((req, res) => {
  const url = new URL(req.url, cfg.issuer);
  console.log(`${req.method} ${url.pathname}`);
  if (url.pathname.startsWith('/interaction/')) {
    interaction(req, res, url).catch((err) => {
      console.log(`interaction error: ${err.name}: ${err.message}`);
      if (!res.headersSent) sendHtml(res, 400, `<p>${escapeHtml(err.message)}</p>`);
      else res.end();
    });
    return;
  }
  handler(req, res);
});

provider.on('server_error', (ctx, err) => console.log(`server_error: ${err.message}`));
provider.on('grant.error', (ctx, err) => console.log(`grant.error: ${err.message}`));

server.listen(cfg.port, cfg.host, () => {
  console.log(`READY ${cfg.issuer}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
