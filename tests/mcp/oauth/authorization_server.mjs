// A real OAuth 2.1 authorization server on loopback for tests/mcp/test_oauth*.py (issue #112):
// panva's oidc-provider, as the tests install it (oauth_support.py). Settings come in env:
// PORT, RESOURCE (mq9-mcp's canonical URL), JWKS (the signing keys, private JWKs made by the
// test: node 20 can hang exporting a key generated in-process), CLIENTS (client metadata),
// TTL (access token lifetime, s). Consent is given headlessly: /interaction/* logs in the
// login_hint (else "alice") and grants what is asked, as a user clicking "allow" would.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const resource = process.env.RESOURCE;
const ttl = Number(process.env.TTL || 300);
const issuer = `http://127.0.0.1:${port}`;
const scopes = 'mq9:read mq9:send mq9:call mq9:admin';

const provider = new Provider(issuer, {
  clients: JSON.parse(process.env.CLIENTS || '[]'),
  jwks: JSON.parse(process.env.JWKS),
  scopes: ['openid', 'offline_access', ...scopes.split(' ')],
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  pkce: { required: () => true },
  issueRefreshToken: () => true,
  ttl: { AccessToken: ttl, ClientCredentials: ttl },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
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
