package discovery

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A certificate that does not verify says nothing by itself of whose fault
// it is. An instance presenting a certificate for another name, from
// another authority, or expired (another process at a recycled address, a
// botched rotation) is at fault, and should be ejected as a hung one is.
// A caller whose CA bundle lacks the service's authority, that asks for a
// name the certificates do not hold, or whose own client certificate has
// expired, fails on every instance alike: counted, its requests ejected
// healthy instances (up to the ejection cap) from the picks of every
// client of the process, well-configured ones included, and logged them
// as outliers. Envoy counts a handshake failure as the host's connect
// failure; gRPC's outlier detection never sees one (a subchannel that
// cannot connect is in TRANSIENT_FAILURE, not ejected). The rule here sits
// between them: a certificate refused (by either side) counts against the
// instance only when the latest https request under that host name that
// ended otherwise was answered, by another instance or by this one before,
// over certificates still valid (proof that this caller's trust and name
// are right: see provesTrust); otherwise, and for
// every refusal after the first with no answer between, it is the caller's
// and counts against none. With one bad instance among good ones, each of
// its refusals follows a good answer (the retry's, or another caller's),
// and it is ejected; with a caller that verifies none, nothing is.

// tlsTrust remembers, per host name of https requests, whether the latest
// such request that got through the handshake, or failed it, got through.
type tlsTrust struct {
	names sync.Map // host name → *atomic.Bool: the latest one got through
	mu    sync.Mutex
	n     int // names held, under mu
}

// maxTrustNames bounds the host names a Transport remembers, as
// maxTLSClones bounds the clones: forgotten, a name's next refusal is the
// caller's (counts against none) until an answer comes again.
const maxTrustNames = maxTLSClones

// answered notes that an https request under name got through.
func (v *tlsTrust) answered(name string) {
	if b, ok := v.names.Load(name); ok {
		if !b.(*atomic.Bool).Load() {
			b.(*atomic.Bool).Store(true)
		}
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.names.Load(name); !ok {
		if v.n >= maxTrustNames {
			v.names.Clear()
			v.n = 0
		}
		v.n++
	}
	b := new(atomic.Bool)
	b.Store(true)
	v.names.Store(name, b)
}

// refused notes that a certificate was refused under name, and reports
// whether that is the instance's fault: the latest request under the name
// got through.
func (v *tlsTrust) refused(name string) (instances bool) {
	b, ok := v.names.Load(name)
	return ok && b.(*atomic.Bool).Swap(false)
}

// provesTrust reports whether an answer over a connection of state cs is
// proof that the caller's trust is right now (tlsTrust): the certificates
// it verified at the handshake are still valid, by the clock the base's
// TLS config verifies with. A connection stays open past its certificates'
// end: answers over one opened before a CA expired under a running caller
// came between the refusals of every new handshake (a pool that grows, an
// instance that starts), and each refusal counted against its instance,
// which the instances that only new connections reach were ejected for.
// An answer with nothing verified (no TLS state, verification of the
// caller's own) proves what it did before.
func provesTrust(cs *tls.ConnectionState, base http.RoundTripper) bool {
	if cs == nil || len(cs.VerifiedChains) == 0 {
		return true
	}
	now := time.Now
	if ht, ok := base.(*http.Transport); ok && ht.TLSClientConfig != nil && ht.TLSClientConfig.Time != nil {
		now = ht.TLSClientConfig.Time
	}
	at := now()
	for _, chain := range cs.VerifiedChains {
		valid := true
		for _, c := range chain {
			if at.Before(c.NotBefore) || at.After(c.NotAfter) {
				valid = false
				break
			}
		}
		if valid {
			return true
		}
	}
	return false
}

// certRefused reports whether err is a TLS handshake that failed on a
// certificate: the instance's, which this caller could not verify (an
// unknown authority, another name, expired), or this caller's, which the
// instance refused (TLS alerts that name a certificate).
func certRefused(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	if errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) {
		return true
	}
	// An alert the instance sent: crypto/tls gives it as a *net.OpError
	// whose Op is "remote error", of an unexported type, whose text is
	// the alert's.
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	switch strings.TrimPrefix(op.Err.Error(), "tls: ") {
	case "bad certificate", "unsupported certificate", "revoked certificate",
		"expired certificate", "unknown certificate", "unknown certificate authority",
		"certificate required":
		return true
	}
	return false
}
