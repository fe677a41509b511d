package discovery

import (
	"fmt"
	"testing"
)

// The shard hash spreads realistic service names: names that share a long
// prefix and differ in a numeric suffix, or in a word in the middle, fill
// every shard within twice the mean.
func TestIndexShardsSpreadNames(t *testing.T) {
	x := newIndex()
	patterns := map[string]func(i int) string{
		"numeric suffix":   func(i int) string { return fmt.Sprintf("payments-api-eu-west-1-%d", i) },
		"padded suffix":    func(i int) string { return fmt.Sprintf("svc-%05d", i) },
		"prefix and team":  func(i int) string { return fmt.Sprintf("team%d.orders.grpc", i) },
		"middle differs":   func(i int) string { return fmt.Sprintf("checkout-%d-service-v2", i) },
		"exactly 8 bytes":  func(i int) string { return fmt.Sprintf("s%07d", i) },
		"short, many kind": func(i int) string { return fmt.Sprintf("%c%c", 'a'+i%26, 'a'+i/26%26) },
	}
	for name, gen := range patterns {
		count := make(map[*indexShard]int)
		const n = 10000
		distinct := map[string]bool{}
		for i := range n {
			s := gen(i)
			distinct[s] = true
			count[x.shard(s)]++
		}
		mean := float64(len(distinct)) / indexShards
		if len(distinct) < n { // short names: few distinct, all shards not expected
			if len(count) < indexShards/2 {
				t.Errorf("%s: %d distinct names went to %d shards; want at least %d", name, len(distinct), len(count), indexShards/2)
			}
			continue
		}
		if len(count) != indexShards {
			t.Errorf("%s: %d of %d shards used", name, len(count), indexShards)
		}
		for _, c := range count {
			if float64(c) > 2*mean {
				t.Errorf("%s: a shard holds %d names; the mean is %.0f", name, c, mean)
				break
			}
		}
	}
}
