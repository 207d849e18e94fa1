package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/bench"
)

// BenchmarkCoordinationOverhead measures what a batch costs beyond reading
// records, at 64 and 1,024 partitions on 4 in-process workers: plan (latest
// offsets of every partition) + log the plan in etcd + dispatch the tasks
// (one range per partition) + collect + commit, every batch one record per
// partition
// (bench.CoordinationOverhead, which `make bench` also runs against
// separate processes). Reported as p50 and p99 per batch; the target is p99
// < 20ms at 1,024 partitions. A partition count whose batches are slow is
// measured over the batches committed within 2 minutes.
func BenchmarkCoordinationOverhead(b *testing.B) {
	for _, parts := range []int32{64, 1024} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) {
			const topic = "overhead"
			tc := newTestCluster(b, clusterOptions{workers: 4, partitions: parts, topics: []string{topic}})
			n := max(min(b.N, 1000), 200) // enough batches for a p99, few enough to end
			b.ResetTimer()
			o, err := bench.CoordinationOverhead(context.Background(), tc.Client, tc.Brokers, topic, parts, n, 2*time.Minute)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			b.ReportMetric(ms(o.P50), "p50-ms/batch")
			b.ReportMetric(ms(o.P99), "p99-ms/batch")
			if testing.Verbose() {
				fmt.Printf("coordination overhead over %d batches of %d tasks on 4 workers (time-boxed %v): p50 %.2fms p99 %.2fms\n",
					o.Batches, parts, o.TimeBoxed, ms(o.P50), ms(o.P99))
			}
		})
	}
}
