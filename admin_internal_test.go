package discovery

import (
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// FuzzIfMatch: reading a PUT's If-Match never panics, and what it accepts
// is "*", a weak tag, or one strong tag that is the ETag of the revision
// it returns (so a GET's ETag sent back matches the revision it named).
func FuzzIfMatch(f *testing.F) {
	for _, s := range []string{`"3"`, `"0"`, `*`, `W/"3"`, `3`, `"-1"`, `"01"`, `"1", "2"`, `""`, `"`, `W/"`, ` "7" `,
		`"9223372036854775808"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		req := httptest.NewRequest("PUT", "/services/x/config", nil)
		req.Header.Set("If-Match", v)
		want, conditional, err := ifMatch(req)
		if err != nil {
			if conditional {
				t.Fatalf("If-Match %q: refused (%v) yet conditional", v, err)
			}
			return
		}
		tag := strings.TrimSpace(req.Header.Get("If-Match"))
		switch {
		case !conditional:
			t.Fatalf("If-Match %q: accepted as no condition", v)
		case want == anyConfigRevision:
			if tag != "*" {
				t.Fatalf("If-Match %q: taken as *", v)
			}
		case want == noConfigMatch:
			if !strings.HasPrefix(tag, `W/"`) {
				t.Fatalf("If-Match %q: taken as a weak tag", v)
			}
		case want < 0 || configETag(want) != tag:
			t.Fatalf("If-Match %q: revision %d, whose ETag is %s", v, want, configETag(want))
		}
	})
}

// A GET's ETag, sent back in If-Match, names the revision it was made of.
func TestIfMatchReadsBackTheETag(t *testing.T) {
	for _, rev := range []int64{0, 1, 42, 1 << 62} {
		req := httptest.NewRequest("PUT", "/services/x/config", nil)
		req.Header.Set("If-Match", configETag(rev))
		if want, ok, err := ifMatch(req); err != nil || !ok || want != rev {
			t.Errorf("If-Match %s = %d, %v, %v; want %s", configETag(rev), want, ok, err, strconv.FormatInt(rev, 10))
		}
	}
}

// FuzzConfigRevisionParam: reading a rollback's revision from its path
// never panics, accepts only the canonical decimal of a revision from 1
// (what the ETag and the JSON give), and refuses anything else as bad
// input (ErrInvalid: a 400), its value shortened for the answer.
func FuzzConfigRevisionParam(f *testing.F) {
	for _, s := range []string{"1", "3", "0", "-1", "01", "+1", "1.0", " 1", "x", "", "9223372036854775807", "9223372036854775808"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rev, err := configRevisionParam(s)
		if err != nil {
			var ve *ValidationError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || len(ve.Value) > 64+len("...") {
				t.Fatalf("%q: %v; want a ValidationError of ErrInvalid with a short value", s, err)
			}
			return
		}
		if rev < 1 || strconv.FormatInt(rev, 10) != s {
			t.Fatalf("%q: accepted as revision %d", s, rev)
		}
	})
}
