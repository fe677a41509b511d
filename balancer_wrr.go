package discovery

import (
	"sync"
	"sync/atomic"
)

// wrrState is smooth weighted round robin (nginx's algorithm) over a
// picker's eligible instances. The sequence nginx produces is periodic,
// with a period of the sum of the weights divided by their GCD; when that is
// small enough it is computed once and Pick walks it with an atomic counter,
// lock-free. Otherwise each pick runs nginx's step under a mutex.
type wrrState struct {
	// seq holds one period's candidate indices once computed (an empty
	// slice when the period is too long to precompute).
	seq atomic.Pointer[[]int32]
	// n is its rotation's place in seq: its own, not round robin's (rr),
	// or picks of either strategy made the other skip instances.
	n atomic.Uint64

	mu      sync.Mutex
	current []float64

	// narrowed holds nginx's state of the picks that filters, a zone or
	// panic narrow, one per narrowHash (see selector.wrr), carried over to
	// the next picker (carryNarrowed).
	narrowed perNarrowing[wrrNarrowed]
}

// carryNarrowed gives p, a picker being built to replace old, old's
// narrowed rotations, each instance's current weight moved to its index in
// p, unless instances left the service (a set that excluded one gone is
// never asked for again, and kept, such sets fill maxNarrowRotations, as
// perNarrowing.reset says). Started again at a random place, every
// narrowed rotation lost its place at each rebuild (a health status or an
// ejection of any instance), and a caller preferring its zone got one
// instance twice in a row about once a rebuild. p is not yet published.
func (p *picker) carryNarrowed(old *picker) {
	m := old.wrr.narrowed.m.Load()
	if m == nil {
		return
	}
	ids := make(map[string]bool, len(p.view.Instances))
	for i := range p.view.Instances {
		ids[p.view.Instances[i].ID] = true
	}
	for i := range old.view.Instances {
		if !ids[old.view.Instances[i].ID] {
			return
		}
	}
	at := make(map[*instState]int, len(p.cands))
	for j := range p.cands {
		at[p.cands[j].is] = j
	}
	next := make(map[uint64]*wrrNarrowed, len(*m))
	for h, ws := range *m {
		n := &wrrNarrowed{current: make([]float64, len(p.cands))}
		ws.mu.Lock()
		n.started = ws.started
		for i, c := range ws.current {
			if j, ok := at[old.cands[i].is]; ok {
				n.current[j] = c
			}
		}
		ws.mu.Unlock()
		next[h] = n
	}
	p.wrr.narrowed.m.Store(&next)
}

// wrrNarrowed is nginx's current weights of one narrowed set, by candidate
// index.
type wrrNarrowed struct {
	mu      sync.Mutex
	current []float64
	started bool // moved to a random place of its sequence
}

// wrr is weighted round robin over the candidates a narrowed pick passes:
// nginx's step, with a state per set of filters and zone, so that a pick
// with a filter or a zone interleaves as smoothly and deterministically as
// one without (it drew at random, as random does).
func (s *selector) wrr(q *pickReq) int {
	n := len(s.p.cands)
	st := s.p.wrr.narrowed.get(q.narrowHash(s.zone), func() *wrrNarrowed { return &wrrNarrowed{current: make([]float64, n)} })
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.started {
		// A random place in the sequence, as the unnarrowed rotation
		// starts (buildPicker): from its start, every process of a fleet
		// sent its first narrowed pick to one instance.
		st.started = true
		var ws periodOf
		for i := range s.p.cands {
			if s.ok(i, q) {
				ws.add(int(s.p.cands[i].weight))
			}
		}
		for k := s.p.rng.intn(wrrStartRange(ws.period(), ws.n)); k > 0; k-- {
			s.wrrStep(q, st)
		}
	}
	return s.wrrStep(q, st)
}

// wrrStartRange is how many of nginx's steps a rotation may skip at
// random before its first pick: one period (sum of the weights over their
// GCD) if stepping through it is cheap, else one step per instance, which
// still starts each process's first pick at a different instance.
func wrrStartRange(period, n int) int {
	if period > 0 && period*n <= maxWRRWork/16 {
		return period
	}
	return max(n, 1)
}

// wrrStep is one step of nginx's algorithm over the candidates q passes.
func (s *selector) wrrStep(q *pickReq, st *wrrNarrowed) int {
	best, total := -1, 0.0
	for i := range s.p.cands {
		if !s.ok(i, q) {
			continue
		}
		w := s.p.cands[i].weight
		st.current[i] += w
		total += w
		if best < 0 || st.current[i] > st.current[best] {
			best = i
		}
	}
	st.current[best] -= total
	return best
}

// maxWRRWork bounds the work of precomputing one period (steps x instances).
const maxWRRWork = 4 << 20

func (p *picker) wrrNext() int {
	w := &p.wrr
	seq := w.seq.Load()
	if seq == nil {
		period := p.wrrPeriod() // computed twice in a race, harmlessly
		w.seq.CompareAndSwap(nil, &period)
		seq = w.seq.Load()
	}
	if len(*seq) > 0 {
		return int((*seq)[(w.n.Add(1)-1)%uint64(len(*seq))])
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.current == nil {
		w.current = make([]float64, len(p.elig))
		// The period is too long to step through: start at one of its
		// first len(elig) places, drawn as the rotation's n (buildPicker).
		for k := w.n.Load() % uint64(len(p.elig)); k > 0; k-- {
			nginxStep(p, w.current)
		}
	}
	return int(p.elig[nginxStep(p, w.current)])
}

// nginxStep adds each weight to its current value, picks the largest and
// subtracts the total from it; it returns a position in p.elig.
func nginxStep(p *picker, current []float64) int {
	best, total := -1, 0.0
	for k, i := range p.elig {
		w := p.cands[i].weight
		current[k] += w
		total += w
		if best < 0 || current[k] > current[best] {
			best = k
		}
	}
	current[best] -= total
	return best
}

// periodOf sums weights for the period of nginx's sequence over them: the
// sum of the weights over their GCD.
type periodOf struct{ g, total, n int }

func (w *periodOf) add(weight int) { w.g, w.total, w.n = gcd(w.g, weight), w.total+weight, w.n+1 }

// period is 0 when every weight is 0.
func (w *periodOf) period() int {
	if w.g == 0 {
		return 0
	}
	return w.total / w.g
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// wrrPeriod returns one period of the nginx sequence, or nil if it is too
// long to precompute.
func (p *picker) wrrPeriod() []int32 {
	var ws periodOf
	for _, i := range p.elig {
		ws.add(int(p.cands[i].weight))
	}
	sum := ws.period()
	if sum == 0 || sum*len(p.elig) > maxWRRWork {
		return nil
	}
	seq := make([]int32, sum)
	current := make([]float64, len(p.elig))
	for k := range seq {
		seq[k] = p.elig[nginxStep(p, current)]
	}
	return seq
}
