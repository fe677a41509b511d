package discovery

import (
	"context"
	"encoding/json"
	"net/http"
)

// RegisterOption configures one registration.
type RegisterOption interface{ applyRegister(*regOptions) }

type regOptionFunc func(*regOptions)

func (f regOptionFunc) applyRegister(o *regOptions) { f(o) }

// regOptions are the in-process parts of a registration: they live in the
// registering process only and are never stored.
type regOptions struct {
	// check is the in-process health check of a router instance (health.go).
	check func(ctx context.Context) error
	// onConfig receives the service's new configuration (config.go).
	onConfig func(ctx context.Context, config json.RawMessage) error
	// handler serves requests to a router instance in-process (balancer.go).
	handler http.Handler
}
