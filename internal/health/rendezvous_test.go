package health

import (
	"fmt"
	"slices"
	"testing"
)

func members(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15)
	}
	return out
}

func TestOwnsAgreesWithOwners(t *testing.T) {
	ms := members(10)
	for i := range 500 {
		key := fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250)
		owners := Owners(ms, key, 2)
		if len(owners) != 2 || owners[0] == owners[1] {
			t.Fatalf("Owners(%s) = %v", key, owners)
		}
		for _, m := range ms {
			if got, want := Owns(ms, m, key, 2), slices.Contains(owners, m); got != want {
				t.Fatalf("Owns(%s, %s) = %v; Owners says %v", m, key, got, want)
			}
		}
	}
	if Owns(ms, "stranger", "k", 2) {
		t.Fatal("a process that is not a member owns a key")
	}
	if got := Owners(ms[:1], "k", 2); len(got) != 1 {
		t.Fatalf("Owners of one member = %v", got)
	}
}

// Every member gets about its share, and a member leaving moves only the
// keys it owned.
func TestRendezvousSpreadAndStability(t *testing.T) {
	ms := members(10)
	const keys = 5000
	count := map[string]int{}
	before := make([][]string, keys)
	for i := range keys {
		key := fmt.Sprintf("inst-%d", i)
		before[i] = Owners(ms, key, 2)
		for _, m := range before[i] {
			count[m]++
		}
	}
	want := keys * 2 / len(ms)
	for m, n := range count {
		if n < want*8/10 || n > want*12/10 {
			t.Errorf("member %s owns %d keys; want about %d", m, n, want)
		}
	}
	gone := ms[3]
	rest := slices.Delete(slices.Clone(ms), 3, 4)
	moved := 0
	for i := range keys {
		after := Owners(rest, fmt.Sprintf("inst-%d", i), 2)
		for _, m := range before[i] {
			if m != gone && !slices.Contains(after, m) {
				t.Fatalf("key %d lost owner %s though %s left", i, m, gone)
			}
		}
		if slices.Contains(before[i], gone) {
			moved++
		}
	}
	if moved != count[gone] {
		t.Fatalf("moved %d; want %d", moved, count[gone])
	}
}

func TestOwnsAllocatesNothing(t *testing.T) {
	ms := members(10)
	if n := testing.AllocsPerRun(100, func() { Owns(ms, ms[4], "10.0.0.7:8080", 2) }); n != 0 {
		t.Fatalf("Owns allocates %v times", n)
	}
}
