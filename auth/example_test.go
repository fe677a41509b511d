package auth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
)

// orders calls inventory: orders signs with a Transport, inventory checks
// with the middleware and its policy, which permits orders to GET items and
// nothing else.
func Example() {
	ctx := context.Background()
	reg, err := discovery.New() // in memory; WithDB and WithRedis in production
	if err != nil {
		panic(err)
	}
	defer reg.Close()

	// inventory's policy is part of its configuration document, stored with
	// UpdateConfig as any configuration (WithConfigValidator("inventory",
	// auth.ValidateConfig) on the Registry refuses one that does not parse).
	policy := `{"auth": {"allow": {"orders": [{"path_prefix": "/items/", "methods": ["GET"]}]}}}`
	if _, err := reg.UpdateConfig(ctx, "inventory", json.RawMessage(policy)); err != nil {
		panic(err)
	}

	// inventory: verify every request.
	verifier, err := auth.NewVerifier(reg, "inventory")
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(verifier.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, _ := auth.FromContext(r.Context())
		fmt.Fprintf(w, "hello %s", caller.Service)
	})))
	defer srv.Close()

	// orders: sign every request.
	signer, err := auth.NewSigner(ctx, reg, "orders")
	if err != nil {
		panic(err)
	}
	defer signer.Close(ctx) // its key retires once its tokens have expired
	client := &http.Client{Transport: &auth.Transport{
		Source: signer,
		// The test server's host is an IP address; normally the host is the
		// service's name and this is not needed.
		Audience: func(*http.Request) (string, error) { return "inventory", nil },
	}}
	defer client.CloseIdleConnections()

	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, srv.URL+"/items/42", nil)
		resp, err := client.Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(method, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	// Output:
	// GET 200 hello orders
	// POST 403 forbidden
}

// Rotate makes a new key sign; the old one is set to retire once the
// tokens it signed have expired.
func ExampleSigner_Rotate() {
	ctx := context.Background()
	reg, err := discovery.New()
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	signer, err := auth.NewSigner(ctx, reg, "orders", auth.WithKeyLifetime(0))
	if err != nil {
		panic(err)
	}
	old := signer.KeyID()
	if err := signer.Rotate(ctx); err != nil {
		panic(err)
	}
	keys, _ := reg.Keys(ctx, "orders")
	for _, k := range keys {
		retiring := k.ID == old && !k.RetiresAt.IsZero() && time.Until(k.RetiresAt) <= auth.DefaultTokenLifetime+auth.MaxLeeway
		fmt.Printf("old=%v signing=%v retiring=%v\n", k.ID == old, k.ID == signer.KeyID(), retiring)
	}
	// Unordered output:
	// old=true signing=false retiring=true
	// old=false signing=true retiring=false
}

// A policy is read from the service's whole configuration document.
func ExampleParsePolicy() {
	p, err := auth.ParsePolicy([]byte(`{
	  "max_items": 10,
	  "auth": {"allow": {"orders": [{"path_prefix": "/api", "methods": ["GET"]}]}}
	}`))
	if err != nil {
		panic(err)
	}
	orders := &discovery.Identity{Service: "orders"}
	for _, target := range []string{"/api/items", "/apix", "/api/../admin"} {
		fmt.Println(target, p.Allows(orders, httptest.NewRequest("GET", target, nil)))
	}
	_, err = auth.ParsePolicy([]byte(`{"auth": {"allow": {"orders": [{"path_prefx": "/api"}]}}}`))
	fmt.Println(err != nil)
	// Output:
	// /api/items true
	// /apix false
	// /api/../admin false
	// true
}
