package auth

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/rssbot/discovery"
)

// Limits of a policy document.
const (
	maxPolicyBytes   = 1 << 20
	maxPolicyCallers = 1024
	maxCallerRules   = 64
	maxPathPrefixLen = 256
	maxRuleMethods   = 16
)

// AnyCaller, as a caller name in a policy, makes its rules apply to every
// verified caller. A Verifier then looks up the keys of any service a token
// names, so unauthenticated requests can make it read the database: once a
// second per name at most (the registry's negative cache), and for names the
// registry does not know, WithUnknownCallerRate's 10 a second on average
// (past it such callers get 503 until it allows more). Name callers where
// you can: those are looked up outside that bound.
const AnyCaller = "*"

// Policy says which services may call which paths of a service, with which
// methods and scopes. It is the "auth" member of the service's configuration
// document (Service.Config), read by ParsePolicy:
//
//	{
//	  "auth": {
//	    "allow": {
//	      "orders":  [{"path_prefix": "/api/", "methods": ["GET", "POST"]}],
//	      "billing": [{"path_prefix": "/api/invoices", "scope": "invoices:write"}],
//	      "*":       [{"path_prefix": "/status", "methods": ["GET"]}]
//	    }
//	  }
//	}
//
// "allow" maps a calling service (or "*", any verified caller) to rules; a
// request is permitted when one rule of its caller (or of "*") matches:
//
//   - path_prefix (required) matches whole path segments: "/api" matches
//     "/api", "/api/" and "/api/x" but not "/apix"; "/" matches every path.
//     It starts with '/' and holds no '%', '?', '#', spaces, empty, "." or
//     ".." segments. The request's path must be clean (no "//", "." or ".."
//     segments) and match both decoded and escaped, so an encoded slash
//     cannot smuggle a request past a rule.
//   - methods (optional) lists the permitted methods in upper case; none
//     means any.
//   - scope (optional) must be one of the token's scopes. The caller
//     chooses those (WithScopes): a scope narrows what the named caller's
//     tokens may do, it keeps out no caller that the rule's name (or "*")
//     admits.
//
// No "auth" member, or an empty one, permits nothing. So does a policy that
// does not parse (unknown fields included), which the Verifier logs. A
// Policy is immutable and safe for concurrent use.
type Policy struct {
	allow map[string][]rule
}

type rule struct {
	prefix  string
	methods []string
	scope   string
}

type policyDoc struct {
	Allow map[string][]ruleDoc `json:"allow"`
}

type ruleDoc struct {
	PathPrefix string   `json:"path_prefix"`
	Methods    []string `json:"methods"`
	Scope      string   `json:"scope"`
}

func policyErr(value, reason string) error {
	if len(value) > 64 {
		value = value[:64] + "..."
	}
	return &discovery.ValidationError{Field: "auth policy", Value: value, Reason: reason}
}

// ValidateConfig refuses a configuration document whose "auth" policy
// ParsePolicy would refuse. Give it to discovery.WithConfigValidator for a
// service that carries a policy, so that UpdateConfig refuses such a
// document (a ConfigError; nothing stored) instead of storing a policy that
// then refuses every caller:
//
//	discovery.WithConfigValidator("inventory", auth.ValidateConfig)
func ValidateConfig(config json.RawMessage) error {
	_, err := ParsePolicy(config)
	return err
}

// ParsePolicy reads the policy in a service's configuration document (the
// whole document; the policy is its "auth" member). An empty document or one
// without "auth" gives a policy that permits nothing. Errors match
// discovery.ErrInvalid and say what is wrong.
func ParsePolicy(config []byte) (*Policy, error) {
	p := &Policy{}
	if len(config) > maxPolicyBytes {
		return nil, policyErr("", "the configuration is larger than 1 MiB")
	}
	if len(bytes.TrimSpace(config)) == 0 {
		return p, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(config, &top); err != nil {
		return nil, policyErr("", "the configuration is not a JSON object")
	}
	raw, ok := top["auth"]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return p, nil
	}
	var doc policyDoc
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, policyErr("", "\"auth\" does not decode: "+err.Error())
	}
	if len(doc.Allow) > maxPolicyCallers {
		return nil, policyErr(strconv.Itoa(len(doc.Allow))+" callers", "more than "+strconv.Itoa(maxPolicyCallers)+" callers")
	}
	p.allow = make(map[string][]rule, len(doc.Allow))
	for caller, rules := range doc.Allow {
		if caller != AnyCaller {
			if err := discovery.ValidateServiceName(caller); err != nil {
				return nil, policyErr(caller, "caller must be a service name or \"*\"")
			}
		}
		if len(rules) > maxCallerRules {
			return nil, policyErr(caller, "more than "+strconv.Itoa(maxCallerRules)+" rules")
		}
		out := make([]rule, 0, len(rules))
		for _, rd := range rules {
			r, err := rd.compile()
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		p.allow[caller] = out
	}
	return p, nil
}

func (rd *ruleDoc) compile() (rule, error) {
	r := rule{prefix: rd.PathPrefix, scope: rd.Scope}
	if err := validPrefix(rd.PathPrefix); err != nil {
		return r, err
	}
	if len(rd.Methods) > maxRuleMethods {
		return r, policyErr(rd.PathPrefix, "more than "+strconv.Itoa(maxRuleMethods)+" methods")
	}
	for _, m := range rd.Methods {
		if m == "" || len(m) > 16 || strings.TrimLeft(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			return r, policyErr(m, "a method is 1 to 16 upper-case letters")
		}
	}
	r.methods = append([]string(nil), rd.Methods...)
	if rd.Scope != "" && (len(rd.Scope) > 128 || !printableASCII(rd.Scope)) {
		return r, policyErr(rd.Scope, "a scope is 1 to 128 printable ASCII characters")
	}
	return r, nil
}

// validPrefix checks a path_prefix: '/' then clean segments of characters
// that need no escaping in a path.
func validPrefix(p string) error {
	if p == "" || p[0] != '/' || len(p) > maxPathPrefixLen {
		return policyErr(p, "path_prefix must start with '/' and be at most "+strconv.Itoa(maxPathPrefixLen)+" bytes")
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("%?#\\\"<>[]^`{|}", c) >= 0 {
			return policyErr(p, "path_prefix character "+strconv.QuoteRune(rune(c))+" not allowed")
		}
	}
	if !cleanPath(p) {
		return policyErr(p, "path_prefix must not have empty, \".\" or \"..\" segments")
	}
	return nil
}

// cleanPath reports whether p starts with '/' and has no empty (but the
// last), "." or ".." segments.
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	rest := p[1:]
	for {
		i := strings.IndexByte(rest, '/')
		seg := rest
		if i >= 0 {
			seg = rest[:i]
		}
		if seg == "." || seg == ".." || seg == "" && i >= 0 {
			return false
		}
		if i < 0 {
			return true
		}
		rest = rest[i+1:]
	}
}

// hasSegmentPrefix reports whether path starts with the whole segments of
// prefix.
func hasSegmentPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}

// names reports whether the policy has rules for caller (or for any caller).
func (p *Policy) names(caller string) bool {
	if p == nil {
		return false
	}
	_, named := p.allow[caller]
	_, anyone := p.allow[AnyCaller]
	return named || anyone
}

// namesItself reports whether the policy has rules for caller by its name,
// not only through AnyCaller.
func (p *Policy) namesItself(caller string) bool {
	if p == nil || caller == AnyCaller {
		return false
	}
	_, named := p.allow[caller]
	return named
}

// Allows reports whether the policy permits the verified caller id to make
// request r. It never permits a request whose path is not clean.
func (p *Policy) Allows(id *discovery.Identity, r *http.Request) bool {
	if p == nil || id == nil || r == nil || r.URL == nil {
		return false
	}
	path := r.URL.Path
	if !cleanPath(path) {
		return false
	}
	escaped := r.URL.EscapedPath()
	return p.match(p.allow[id.Service], id, r.Method, path, escaped) ||
		p.match(p.allow[AnyCaller], id, r.Method, path, escaped)
}

func (p *Policy) match(rules []rule, id *discovery.Identity, method, path, escaped string) bool {
	for i := range rules {
		ru := &rules[i]
		if !hasSegmentPrefix(path, ru.prefix) || !hasSegmentPrefix(escaped, ru.prefix) {
			continue
		}
		if len(ru.methods) > 0 && !contains(ru.methods, method) {
			continue
		}
		if ru.scope != "" && !id.HasScope(ru.scope) {
			continue
		}
		return true
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
