package health

// Rendezvous (highest random weight) hashing chooses which processes probe
// an instance: each member scores hash(member, instance) and the n highest
// win. Every process that sees the same members chooses the same winners,
// with no coordination, and a member joining or leaving moves only the
// instances it wins or won.

// weight is the score of member for key: FNV-1a over both, then the
// finaliser of MurmurHash3 so that similar names spread.
func weight(member, key string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(member); i++ {
		h = (h ^ uint64(member[i])) * 1099511628211
	}
	h = (h ^ 0xff) * 1099511628211 // separator: ("ab","c") differs from ("a","bc")
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// Owns reports whether self is among the n members with the highest weight
// for key. members must hold distinct IDs; self need not be one of them (it
// then owns nothing). It allocates nothing.
func Owns(members []string, self, key string, n int) bool {
	if n <= 0 {
		return false
	}
	mine, found := weight(self, key), false
	higher := 0
	for _, m := range members {
		if m == self {
			found = true
			continue
		}
		w := weight(m, key)
		if w > mine || w == mine && m > self {
			higher++
			if higher >= n {
				return false
			}
		}
	}
	return found
}

// Owners returns the n members with the highest weight for key, highest
// first.
func Owners(members []string, key string, n int) []string {
	type mw struct {
		m string
		w uint64
	}
	top := make([]mw, 0, n+1)
	for _, m := range members {
		c := mw{m, weight(m, key)}
		i := len(top)
		for i > 0 && (top[i-1].w < c.w || top[i-1].w == c.w && top[i-1].m < c.m) {
			i--
		}
		if i >= n {
			continue
		}
		top = append(top, mw{})
		copy(top[i+1:], top[i:])
		top[i] = c
		if len(top) > n {
			top = top[:n]
		}
	}
	out := make([]string, len(top))
	for i := range top {
		out[i] = top[i].m
	}
	return out
}
