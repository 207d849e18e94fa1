package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/bench"
)

// BenchmarkCoordinationOverhead measures what a batch costs beyond reading
// records, at 64, 1,024 and 10,000 partitions on 4 in-process workers: plan
// (latest offsets of every partition) + log the plan in etcd + dispatch the
// tasks (ranges packed per worker) + collect + commit, every batch one
// record per partition (bench.CoordinationOverhead, which `make bench` also
// runs against separate processes). Reported as p50 and p99 per batch; the
// targets are p50 < 10 ms and p99 < 20 ms at 1,024 partitions, p99 < 100 ms
// at 10,000. A partition count whose batches are slow is time-boxed: measured
// over the batches committed within 2 minutes (1 at 10,000 partitions), or
// whatever committed within twice that.
func BenchmarkCoordinationOverhead(b *testing.B) {
	for _, tc := range []struct {
		parts  int32
		budget time.Duration
	}{{64, 2 * time.Minute}, {1024, 2 * time.Minute}, {10000, time.Minute}} {
		b.Run(fmt.Sprintf("partitions=%d", tc.parts), func(b *testing.B) {
			const topic = "overhead"
			tcl := newTestCluster(b, clusterOptions{workers: 4, partitions: tc.parts, topics: []string{topic}})
			n := max(min(b.N, 1000), 200) // enough batches for a p99, few enough to end
			b.ResetTimer()
			o, err := bench.CoordinationOverhead(context.Background(), tcl.Client, tcl.Brokers,
				[]bench.OverheadTopic{{Name: topic, Partitions: tc.parts}}, n, tc.budget)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if o.Batches == 0 {
				b.Fatalf("no figure: %d batches of %d partitions committed in %s (time-boxed)", o.Committed, tc.parts, o.Elapsed.Round(time.Second))
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			b.ReportMetric(ms(o.P50), "p50-ms/batch")
			b.ReportMetric(ms(o.P99), "p99-ms/batch")
			if testing.Verbose() {
				fmt.Printf("coordination overhead over %d batches of %d partitions on 4 workers (time-boxed %v, %d committed in %s; setup %s): p50 %.2fms p99 %.2fms\n",
					o.Batches, tc.parts, o.TimeBoxed, o.Committed, o.Elapsed.Round(time.Millisecond), o.Setup.Round(time.Millisecond), ms(o.P50), ms(o.P99))
			}
		})
	}
}
