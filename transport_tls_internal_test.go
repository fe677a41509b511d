package discovery

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
)

// The Transports of a Registry use a clone of an *http.Transport base for
// each host name of their https requests (a connection verified for one
// name never serves another). One was kept for every name ever asked for:
// a resolver that maps many host names to services (ServiceFromHost) grew
// them without bound. The most recently used are kept, up to maxTLSClones;
// a name in steady use keeps its clone (and its connections).
func TestTransportBoundsItsPerHostNameClones(t *testing.T) {
	tr := &transport{r: &Registry{}, o: transportOptions{base: &http.Transport{}}}
	out := &http.Request{URL: &url.URL{Scheme: "https", Host: "10.0.0.7:443"}, Header: http.Header{}}
	hot, _ := tr.baseFor(out, "hot")
	if hot == tr.o.base {
		t.Fatal("an https request went to the base itself; want a clone naming the host")
	}
	for i := range 3 * maxTLSClones {
		name := "h" + strconv.Itoa(i)
		rt, _ := tr.baseFor(out, name)
		c := rt.(*http.Transport)
		if c.TLSClientConfig == nil || c.TLSClientConfig.ServerName != name {
			t.Fatalf("the clone for %s verifies %+v; want ServerName %s", name, c.TLSClientConfig, name)
		}
		if got, _ := tr.baseFor(out, "hot"); got != hot {
			t.Fatalf("after %d other names, the name in steady use got a new clone; want it kept", i+1)
		}
	}
	n := 0
	tr.r.pools.clones.Range(func(_, _ any) bool { n++; return true })
	if n > maxTLSClones {
		t.Errorf("%d clones kept after %d host names; want at most %d", n, 3*maxTLSClones+1, maxTLSClones)
	}
}

// A refused certificate is the instance's only when the latest request
// under its host name was answered, and once: a second refusal with no
// answer between is the caller's (a CA that expired under a running
// caller counts against one instance once, not all of them up to the
// ejection cap). The names remembered are bounded, as the clones are.
func TestTLSTrustCountsARefusalAfterAnAnswerOnce(t *testing.T) {
	var v tlsTrust
	if v.refused("web") {
		t.Fatal("a refusal under a name never answered was the instance's; want the caller's")
	}
	v.answered("web")
	if !v.refused("web") {
		t.Fatal("a refusal after an answer was the caller's; want the instance's")
	}
	if v.refused("web") {
		t.Fatal("a second refusal with no answer between was the instance's; want the caller's")
	}
	for i := range 3 * maxTrustNames {
		v.answered("h" + strconv.Itoa(i))
	}
	n := 0
	v.names.Range(func(_, _ any) bool { n++; return true })
	if n > maxTrustNames {
		t.Errorf("%d names remembered after %d; want at most %d", n, 3*maxTrustNames, maxTrustNames)
	}
}
