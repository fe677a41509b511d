// Package auth authenticates service-to-service calls with short-lived
// signed tokens (JWTs) whose public keys travel through the registry, and
// authorizes them with a policy kept in the called service's configuration.
// It follows RFC 8725 (JWT best current practice) in the shape of SPIFFE's
// JWT-SVIDs. It uses only the public API of package discovery.
//
// # Keys
//
// Each service signs with its own keys: Ed25519 ("EdDSA") by default, ECDSA
// P-256 ("ES256") allowed, nothing else ever (no HMAC, no "none", no RSA). A
// Signer generates (or is given) a private key and publishes its public
// half with Registry.PublishKey under a random key ID ("kid"); it never
// leaves the process. Rotate makes a new key sign from then on and sets the
// old one to retire once every token it signed has expired (token lifetime
// plus MaxLeeway); a Signer also rotates by itself after half its key
// lifetime (24 h by default). Close, as the process exits, retires the key
// it generated once the tokens it issued have expired; a key left behind
// by a process that did not close its Signer stops verifying within a day.
// The Registry's reaper deletes a retired key from the registry a little
// later (WithReaper: 2 min after it retired).
// Revoking a key is Registry.RetireKey with
// the current time: it bumps the service's revision, so every process drops
// the key within one cache refresh (at once with Redis), and a Signer that
// signs with it, which reads its key's retirement once a second, drops its
// cached tokens and rotates to a new key. A retirement only moves earlier,
// so a later rotation does not undo a revocation, and a revocation is kept
// for good: the registry refuses to publish the revoked key again, under
// any ID (a Signer started WithKey with it fails with
// discovery.ErrRevoked), even after the reaper has deleted it.
//
// # Tokens
//
// A token names its deployment ("iss", WithIssuer), its caller ("sub":
// "service" or "service/instance"), exactly one target service ("aud"), its
// scopes ("scope", a list), and its validity ("iat", "nbf", "exp": 1 minute
// by default, at most 5); its header names the key ("kid") and its type
// ("typ": "svc+jwt"). A Transport puts them on outgoing requests, one per
// target service, cached until three quarters of their lifetime.
//
// # Verification
//
// A Verifier (Wrap, or Middleware) checks the token of each request: see
// Verifier for every check and its order. Notably, header key references
// (jku, x5u, jwk, x5c) are refused outright and never fetched; the key is
// found by "kid" among the calling service's published keys (a malformed
// kid is refused before any lookup), and the parser is pinned to that key's
// own algorithm. An unknown kid makes the Verifier read the caller's keys
// from the database, at most once a minute per service (a second after a
// read that failed); requests that meet it during the read wait for it.
// Lookups of callers the registry has not been found to know, which a
// client making names up would have read from the database one per
// request, are bounded (WithUnknownCallerRate: 10 a second by default);
// past the bound such a token gets 503 unread.
//
// Then the called service's policy decides: see Policy for the schema, kept
// under "auth" in the service's configuration document. The verified
// identity is in the request's context (FromContext).
//
// # Failures
//
// A request without a valid token gets 401 (with "WWW-Authenticate:
// Bearer"), a verified caller the policy does not permit gets 403, and a
// request that cannot be decided because keys or policy cannot be read gets
// 503. The bodies are bare ("unauthorized", "forbidden", "service
// unavailable") and help no attacker; the reason goes to the injected zap
// logger (WithLogger) with the method, path, claimed caller and key ID, and
// never with the token or its signature.
//
// The Signer and the Verifier implement discovery.TokenSource and
// discovery.Authorizer, which the Registry's own features use: hand them
// over with Registry.SetTokenSource and Registry.SetAuthorizer.
package auth
