package discovery

import (
	"encoding/json"
	"math"
	"time"
)

// The JSON the admin handler serves. Its field names are part of the
// handler's contract (the dashboard reads them, scripts may too); durations
// are in milliseconds, times in RFC 3339 (UTC), absent when zero.

type jsonOverview struct {
	At                string          `json:"at"`
	ProcessID         string          `json:"process_id"`
	TotalServices     int             `json:"total_services"`
	HealthyServices   int             `json:"healthy_services"`
	DegradedServices  int             `json:"degraded_services"`
	UnhealthyServices int             `json:"unhealthy_services"`
	AvgResponseTimeMS float64         `json:"avg_response_time_ms"`
	FromCache         bool            `json:"from_cache,omitempty"`
	Cache             []jsonLayer     `json:"cache"`
	Services          []jsonServiceOV `json:"services"`
}

type jsonLayer struct {
	Layer   string  `json:"layer"`
	Name    string  `json:"name"`
	Hits    uint64  `json:"hits"`
	Misses  uint64  `json:"misses"`
	HitRate float64 `json:"hit_rate"`
}

type jsonServiceOV struct {
	Name           string         `json:"name"`
	Revision       int64          `json:"revision"`
	Status         string         `json:"status"`
	Score          float64        `json:"score"`
	ResponseTimeMS float64        `json:"response_time_ms"`
	LastCheck      string         `json:"last_check,omitempty"`
	Method         string         `json:"method"`
	Live           int            `json:"live"`
	Usable         int            `json:"usable"`
	Instances      []jsonInstance `json:"instances"`
}

type jsonInstance struct {
	ID                  string    `json:"id"`
	Addr                string    `json:"addr"`
	Status              string    `json:"status"`
	CheckStatus         string    `json:"check_status"`
	Score               float64   `json:"score"`
	ResponseTimeMS      float64   `json:"response_time_ms"`
	LastCheck           string    `json:"last_check,omitempty"`
	LastError           string    `json:"last_error,omitempty"`
	ConsecutivePasses   int       `json:"consecutive_passes"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	Ejected             bool      `json:"ejected"`
	EjectedUntil        string    `json:"ejected_until,omitempty"`
	TimesEjected        int       `json:"times_ejected"`
	PassiveFailures     int       `json:"passive_failures"`
	Method              string    `json:"method"`
	Zone                string    `json:"zone,omitempty"`
	Version             string    `json:"version,omitempty"`
	Weight              int       `json:"weight"`
	RTTms               []float64 `json:"rtt_ms"`
	// History is set by the service endpoint only.
	History []jsonCheck `json:"history,omitempty"`
}

type jsonCheck struct {
	At             string  `json:"at"`
	Status         string  `json:"status"`
	ResponseTimeMS float64 `json:"response_time_ms"`
	Error          string  `json:"error,omitempty"`
}

type jsonService struct {
	Name      string         `json:"name"`
	Revision  int64          `json:"revision"`
	Instances []jsonInstance `json:"instances"`
}

type jsonConfig struct {
	Service        string          `json:"service"`
	ConfigRevision int64           `json:"config_revision"`
	Config         json.RawMessage `json:"config"`
}

type jsonConfigHistory struct {
	Service  string              `json:"service"`
	Versions []jsonConfigVersion `json:"versions"`
}

type jsonConfigVersion struct {
	ConfigRevision int64           `json:"config_revision"`
	Config         json.RawMessage `json:"config"`
	CreatedAt      time.Time       `json:"created_at"`
}

type jsonConfigReport struct {
	Service        string       `json:"service"`
	Revision       int64        `json:"revision"`
	ConfigRevision int64        `json:"config_revision"`
	Instances      []jsonNotify `json:"instances"`
	// NotifyError says why no instance was notified (a backend's own text
	// goes to the log only).
	NotifyError string `json:"notify_error,omitempty"`
}

type jsonNotify struct {
	ID       string `json:"id"`
	Outcome  string `json:"outcome"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

type jsonError struct {
	Error string `json:"error"`
}

// sparkPoints is how many response times an instance's sparkline shows.
const sparkPoints = 32

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func toJSONInstance(h *InstanceHealth, history bool) jsonInstance {
	j := jsonInstance{
		ID: h.ID, Addr: h.Addr, Status: h.Shown.String(), CheckStatus: h.Status.String(), Score: round3(h.Score),
		ResponseTimeMS: ms(h.ResponseTime), LastCheck: stamp(h.LastCheck), LastError: h.LastError,
		ConsecutivePasses: h.ConsecutivePasses, ConsecutiveFailures: h.ConsecutiveFailures,
		Ejected: h.Ejected, EjectedUntil: stamp(h.EjectedUntil), TimesEjected: h.TimesEjected, PassiveFailures: h.PassiveFailures,
		Method: h.Method.String(), Zone: h.Zone, Version: h.Version, Weight: h.Weight, RTTms: []float64{},
	}
	hist := h.History
	if len(hist) > sparkPoints {
		hist = hist[len(hist)-sparkPoints:]
	}
	for _, c := range hist {
		j.RTTms = append(j.RTTms, ms(c.ResponseTime))
	}
	if history {
		j.History = make([]jsonCheck, 0, len(h.History))
		for _, c := range h.History {
			j.History = append(j.History, jsonCheck{At: stamp(c.At), Status: c.Status.String(), ResponseTimeMS: ms(c.ResponseTime), Error: c.Error})
		}
	}
	return j
}

func toJSONOverview(ov *Overview) jsonOverview {
	j := jsonOverview{
		At: stamp(ov.At), ProcessID: ov.ProcessID, TotalServices: ov.TotalServices,
		HealthyServices: ov.HealthyServices, DegradedServices: ov.DegradedServices, UnhealthyServices: ov.UnhealthyServices,
		AvgResponseTimeMS: ms(ov.AvgResponseTime), FromCache: ov.FromCache,
		Cache: []jsonLayer{}, Services: []jsonServiceOV{},
	}
	for _, l := range ov.Cache {
		j.Cache = append(j.Cache, jsonLayer{Layer: l.Layer.String(), Name: l.Layer.Name(), Hits: l.Hits, Misses: l.Misses, HitRate: round3(l.HitRate)})
	}
	for i := range ov.Services {
		s := &ov.Services[i]
		js := jsonServiceOV{Name: s.Name, Revision: s.Revision, Status: s.Status.String(), Score: round3(s.Score),
			ResponseTimeMS: ms(s.ResponseTime), LastCheck: stamp(s.LastCheck), Method: s.Method.String(),
			Live: s.Live, Usable: s.Usable, Instances: []jsonInstance{}}
		for k := range s.Instances {
			js.Instances = append(js.Instances, toJSONInstance(&s.Instances[k], false))
		}
		j.Services = append(j.Services, js)
	}
	return j
}
