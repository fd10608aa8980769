// A real OAuth 2.1 authorization server on loopback for tests/mcp/test_oauth*.py (issue #112):
// panva's oidc-provider, as the tests install it (oauth_support.py). Settings come in env:
// PORT, RESOURCE (mq9-mcp's canonical URL), JWKS (the signing keys, private JWKs made by the
// test: node 20 can hang exporting a key generated in-process), CLIENTS (client metadata),
// TTL (access token lifetime, s), CIMD_ORIGIN (where the test serves Client ID Metadata
// Documents: loopback, so the SSRF guard is lifted for that origin alone; node trusts its
// certificate by NODE_EXTRA_CA_CERTS). Consent is given headlessly: /interaction/* logs in the
// login_hint (else "alice") and grants what is asked, as a user clicking "allow" would.
//
// What an operator must allow for MCP clients (docs/mcp-oauth.md "What the identity provider must
// allow"): the mq9 scopes and offline_access as scopes a client may register with and ask for
// (without them a client's registration is refused "scope must only contain Authorization
// Server supported scope values"), a client that registers itself may later ask for any mq9
// scope (a step-up happens under the same registration; the person's consent decides what each
// token holds), and Client ID Metadata Documents (MCP's preferred registration).
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const resource = process.env.RESOURCE;
const ttl = Number(process.env.TTL || 300);
const issuer = `http://127.0.0.1:${port}`;
const scopes = 'mq9:read mq9:send mq9:call mq9:admin';
const cimdOrigin = process.env.CIMD_ORIGIN;

// A self-registered client's `scope` is the ceiling of what it may ask for later: it registers
// with its first sign-in's scopes, so the ceiling is widened to every mq9 scope (and a refresh).
function widenedScope(ctx, key, value, metadata) {
  if (ctx?.oidc?.route !== 'registration') return;
  const asked = new Set((metadata.scope || '').split(' ').filter(Boolean));
  for (const scope of ['offline_access', ...scopes.split(' ')]) asked.add(scope);
  metadata.scope = [...asked].join(' ');
}

// oidc-provider refuses to fetch from loopback (its SSRF guard); the test's documents are there
function fetchAllowingTheTestsDocuments(url, options) {
  if (cimdOrigin && String(url).startsWith(`${cimdOrigin}/`)) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  }
  return globalThis.fetch(url, options);
}

const provider = new Provider(issuer, {
  clients: JSON.parse(process.env.CLIENTS || '[]'),
  jwks: JSON.parse(process.env.JWKS),
  scopes: ['openid', 'offline_access', ...scopes.split(' ')],
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  pkce: { required: () => true },
  issueRefreshToken: () => true,
  ttl: { AccessToken: ttl, ClientCredentials: ttl },
  extraClientMetadata: { properties: ['mq9_scope_ceiling'], validator: widenedScope },
  fetch: fetchAllowingTheTestsDocuments,
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    clientIdMetadataDocument: { enabled: true, ack: 'draft-02' },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator, client) => ({
        scope: indicator === resource ? scopes : 'mq9:read',
        audience: indicator,
        accessTokenTTL: ttl,
        // a client named opaque-* gets opaque tokens, checked by introspection
        accessTokenFormat: client.clientId.startsWith('opaque') ? 'opaque' : 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});
provider.proxy = false;

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  const accountId = session?.accountId || params.login_hint || 'alice';
  if (prompt.name === 'login') {
    return provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  for (const [indicator, wanted] of Object.entries(prompt.details.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, wanted.join(' '));
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => { res.statusCode = 500; res.end(String(err)); });
    return;
  }
  callback(req, res);
}).listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
