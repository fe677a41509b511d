package discovery

import "context"

// TokenSource issues the tokens this process presents to other services: a
// short-lived token for one audience (the service called). With
// WithTokenSource, configuration notifications sent over HTTP carry
// "Authorization: Bearer <token>" for the notified service.
type TokenSource interface {
	Token(ctx context.Context, audience string) (string, error)
}

// WithTokenSource makes the Registry sign its requests to other services
// with tokens from ts.
func WithTokenSource(ts TokenSource) Option { return optionFunc(func(o *options) { o.tokens = ts }) }
