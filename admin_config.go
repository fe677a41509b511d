package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// The admin handler's configuration endpoints: GET and PUT of
// /services/{name}/config, with ETag, If-Match and If-None-Match, GET of
// /services/{name}/config/history, and POST of
// /services/{name}/config/rollback/{revision}.

func (a *admin) config(w http.ResponseWriter, req *http.Request) {
	name, ok := a.serviceName(w, req)
	if !ok {
		return
	}
	ctx, cancel := a.ctx(req)
	defer cancel()
	cfg, rev, err := a.r.Config(ctx, name)
	if err != nil {
		a.fail(w, err)
		return
	}
	if len(cfg) == 0 {
		cfg = json.RawMessage("null")
	}
	w.Header().Set("ETag", configETag(rev))
	writeJSON(w, http.StatusOK, jsonConfig{Service: name, ConfigRevision: rev, Config: cfg})
}

// configHistory answers the kept versions of a service's configuration
// (ConfigHistory), newest first, with the newest's revision as the ETag:
// the If-Match of a rollback to one of them. A service that exists without
// a configuration has none (ETag "0", as its GET .../config gives).
func (a *admin) configHistory(w http.ResponseWriter, req *http.Request) {
	name, ok := a.serviceName(w, req)
	if !ok {
		return
	}
	ctx, cancel := a.ctx(req)
	defer cancel()
	hist, err := a.r.ConfigHistory(ctx, name)
	if errors.Is(err, ErrNotFound) {
		// Never configured: a 404 only if the service is unknown too.
		_, _, err = a.r.Config(ctx, name)
		hist = nil
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	out := jsonConfigHistory{Service: name, Versions: make([]jsonConfigVersion, 0, len(hist))}
	var rev int64
	for _, v := range hist {
		out.Versions = append(out.Versions, jsonConfigVersion{ConfigRevision: v.Revision, Config: v.Config, CreatedAt: v.CreatedAt})
		rev = max(rev, v.Revision)
	}
	w.Header().Set("ETag", configETag(rev))
	writeJSON(w, http.StatusOK, out)
}

// configETag is the entity tag of configuration revision rev: "rev" ("0"
// for a service without a configuration).
func configETag(rev int64) string { return `"` + strconv.FormatInt(rev, 10) + `"` }

// ifMatch reads the If-Match header of a PUT of a configuration: the
// configuration revision it expects, and whether it has one at all. "*"
// (any configuration, not none) gives anyConfigRevision, a weak tag
// noConfigMatch (If-Match compares strongly: it never matches). Anything
// but one strong tag naming a revision ("3"), "*" or a weak tag is bad
// input.
func ifMatch(req *http.Request) (want int64, conditional bool, err error) {
	vals := req.Header.Values("If-Match")
	if len(vals) == 0 {
		return 0, false, nil
	}
	v := strings.TrimSpace(vals[0])
	refuse := &ValidationError{Field: "If-Match", Value: strings.Join(vals, ", "), Reason: `must be one entity tag, as GET's ETag ("3"), or *`}
	switch {
	case len(vals) > 1 || strings.Contains(v, ","):
		return 0, false, refuse
	case v == "*":
		return anyConfigRevision, true, nil
	case strings.HasPrefix(v, `W/"`) && strings.HasSuffix(v, `"`) && len(v) > 3:
		return noConfigMatch, true, nil
	case len(v) < 3 || v[0] != '"' || v[len(v)-1] != '"':
		return 0, false, refuse
	}
	rev, perr := strconv.ParseInt(v[1:len(v)-1], 10, 64)
	if perr != nil || rev < 0 || strconv.FormatInt(rev, 10) != v[1:len(v)-1] {
		return 0, false, refuse
	}
	return rev, true, nil
}

// ifNoneMatch reads the If-None-Match header of a PUT of a configuration:
// "*" stores it only if the service has no configuration (create only, as
// UpdateConfigIf with revision 0). Ignored, it let the PUT overwrite the
// configuration its client meant to protect. Anything else is bad input:
// a PUT has no use for "store unless at this revision".
func ifNoneMatch(req *http.Request) (createOnly bool, err error) {
	vals := req.Header.Values("If-None-Match")
	if len(vals) == 0 {
		return false, nil
	}
	if len(vals) > 1 || strings.TrimSpace(vals[0]) != "*" {
		return false, &ValidationError{Field: "If-None-Match", Value: strings.Join(vals, ", "), Reason: "a PUT of a configuration takes only *"}
	}
	return true, nil
}

// noConfigMatch is the expected revision of an If-Match no configuration
// matches (a weak tag).
const noConfigMatch = -2

func (a *admin) putConfig(w http.ResponseWriter, req *http.Request) {
	who, ok := a.authorize(w, req)
	if !ok {
		return
	}
	name, ok := a.serviceName(w, req)
	if !ok {
		return
	}
	want, conditional, err := ifMatch(req)
	if err != nil {
		a.fail(w, err)
		return
	}
	createOnly, err := ifNoneMatch(req)
	if err != nil {
		a.fail(w, err)
		return
	}
	if createOnly {
		// Both must hold: If-None-Match * only with the If-Match of no
		// configuration ("0"), which is what * asks for.
		if conditional && want != 0 {
			a.fail(w, fmt.Errorf("discovery: If-Match and If-None-Match * of service %q cannot both hold: %w", name, ErrConflict))
			return
		}
		want, conditional = 0, true
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxConfigBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeJSON(w, http.StatusRequestEntityTooLarge, jsonError{"discovery: config larger than " + strconv.Itoa(MaxConfigBytes) + " bytes"})
			return
		}
		writeJSON(w, http.StatusBadRequest, jsonError{"discovery: cannot read the request body"})
		return
	}
	ctx, cancel := a.ctx(req)
	defer cancel()
	rep, err := a.putConfigIf(ctx, name, body, want, conditional)
	if err != nil {
		a.fail(w, err)
		return
	}
	a.r.log.Info("discovery: admin: config updated", zap.String("service", name), zap.String("by", who.caller()))
	a.writeConfigReport(w, name, rep)
}

// writeConfigReport answers a stored configuration (a PUT's, a
// rollback's): the report of its notifications, and the new revision's
// ETag.
func (a *admin) writeConfigReport(w http.ResponseWriter, name string, rep ConfigReport) {
	out := jsonConfigReport{Service: rep.Service, Revision: rep.Revision, ConfigRevision: rep.ConfigRevision, Instances: []jsonNotify{}}
	for _, n := range rep.Instances {
		jn := jsonNotify{ID: n.Instance.ID, Outcome: n.Outcome.String(), Attempts: n.Attempts, Reason: n.Reason}
		var be *BackendError
		switch {
		case errors.As(n.Err, &be):
			// A TokenSource's backend (an auth.Signer that could not publish
			// the key it had to rotate to): its own text names its address
			// and user, and was answered here as it was.
			a.r.log.Warn("discovery: admin request failed", zap.String("service", name), zap.String("instance", n.Instance.ID), zap.Error(n.Err))
			jn.Error = "discovery: " + be.Backend + " unavailable"
		case n.Err != nil:
			jn.Error = n.Err.Error()
		}
		out.Instances = append(out.Instances, jn)
	}
	if rep.NotifyErr != nil {
		out.NotifyError = "discovery: stored, but the instances to notify could not be listed"
	}
	w.Header().Set("ETag", configETag(rep.ConfigRevision))
	writeJSON(w, http.StatusOK, out)
}

// putConfigIf stores a PUT's configuration: with UpdateConfigIf when it
// has an If-Match (want), else with UpdateConfig. "*" expects the revision
// the database holds now, if there is one: UpdateConfigIf then refuses the
// PUT if another came between. A weak tag, or "*" without a configuration,
// fails before the body is checked; a revision is compared by UpdateConfigIf,
// after the body passed its checks (a refused body is a 400 either way).
func (a *admin) putConfigIf(ctx context.Context, name string, doc []byte, want int64, conditional bool) (ConfigReport, error) {
	if !conditional {
		return a.r.UpdateConfig(ctx, name, doc)
	}
	want, err := a.matchedRevision(ctx, name, want)
	if err != nil {
		return ConfigReport{}, err
	}
	return a.r.UpdateConfigIf(ctx, name, want, doc)
}

// matchedRevision is the configuration revision an If-Match (ifMatch's
// want) asks a write to expect: "*" the revision the database holds now,
// if there is one (the compare-and-set then refuses the write if another
// came between), a revision itself. A weak tag, or "*" without a
// configuration, is a conflict (412) without a write; a Store that keeps
// no configuration is ErrUnsupported first (501), not a 412 that sends the
// client to read the ETag and try again for what it can never store.
func (a *admin) matchedRevision(ctx context.Context, name string, want int64) (int64, error) {
	if want != noConfigMatch && want != anyConfigRevision {
		return want, nil
	}
	if _, err := a.r.configStore(); err != nil {
		return 0, err
	}
	if want == noConfigMatch {
		return 0, fmt.Errorf("discovery: If-Match of service %q is a weak entity tag, which never matches: %w", name, ErrConflict)
	}
	svc, err := a.r.storeLoad(ctx, name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return 0, err
	}
	if err != nil || svc.ConfigRevision == 0 {
		return 0, fmt.Errorf("discovery: service %q has no config for If-Match * to match: %w", name, ErrConflict)
	}
	return svc.ConfigRevision, nil
}

// rollbackConfig restores a kept version of a service's configuration
// (RollbackConfigIf), if the configuration is still at the revision the
// If-Match names. Without an If-Match it answers 428 and changes nothing:
// unlike a PUT, which states the whole configuration its sender wants, a
// rollback is decided on the configuration its sender saw, and one stored
// since (a fix) is what it would erase without a word; and a POST without
// a header of its own is one that a page in an operator's browser can send
// to the handler cross-site, where a PUT or a DELETE, or a POST with
// If-Match, cannot without the handler's consent (a CORS preflight it does
// not answer). "If-Match: *" asks for a rollback of whatever is stored.
func (a *admin) rollbackConfig(w http.ResponseWriter, req *http.Request) {
	who, ok := a.authorize(w, req)
	if !ok {
		return
	}
	name, ok := a.serviceName(w, req)
	if !ok {
		return
	}
	to, err := configRevisionParam(req.PathValue("revision"))
	if err != nil {
		a.fail(w, err)
		return
	}
	want, conditional, err := ifMatch(req)
	if err != nil {
		a.fail(w, err)
		return
	}
	if vals := req.Header.Values("If-None-Match"); len(vals) > 0 {
		a.fail(w, &ValidationError{Field: "If-None-Match", Value: strings.Join(vals, ", "), Reason: "a rollback takes If-Match only"})
		return
	}
	if !conditional {
		writeJSON(w, http.StatusPreconditionRequired, jsonError{`discovery: a rollback needs If-Match: the ETag of the configuration it replaces (GET .../config), or * for whatever is stored`})
		return
	}
	ctx, cancel := a.ctx(req)
	defer cancel()
	from, err := a.matchedRevision(ctx, name, want)
	if want == anyConfigRevision && errors.Is(err, ErrConflict) {
		// No configuration, so no version of one to restore: the 404 the
		// request would get without its If-Match comes before a 412 (RFC
		// 9110, 13.2.1), as it does for an If-Match naming a revision.
		err = fmt.Errorf("discovery: config revision %d of service %q is not in its history (it has no config): %w", to, name, ErrNotFound)
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	rep, err := a.r.RollbackConfigIf(ctx, name, from, to)
	if err != nil {
		a.fail(w, err)
		return
	}
	a.r.log.Info("discovery: admin: config rolled back", zap.String("service", name), zap.Int64("to", to),
		zap.Int64("config_revision", rep.ConfigRevision), zap.String("by", who.caller()))
	a.writeConfigReport(w, name, rep)
}

// configRevisionParam reads the configuration revision a path names: a
// positive decimal number as the ETag and the JSON give it ("3"), nothing
// else ("03", "+3", "-1", "0": bad input).
func configRevisionParam(s string) (int64, error) {
	rev, err := strconv.ParseInt(s, 10, 64)
	if err != nil || rev < 1 || strconv.FormatInt(rev, 10) != s {
		if len(s) > 64 {
			s = s[:64] + "..."
		}
		return 0, &ValidationError{Field: "config revision", Value: s, Reason: "must be a configuration revision: a whole number from 1"}
	}
	return rev, nil
}
