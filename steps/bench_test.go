package steps

import (
	"context"
	"fmt"
	"testing"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// clickRecords returns n click events of about 150 bytes, keyed by user, as a
// reader would hand them over.
func clickRecords(n int) []*record.Record {
	pages := []string{"/", "/products/1234", "/cart", "/checkout", "/search?q=shoes"}
	actions := []string{"click", "view", "click", "scroll"}
	countries := []string{"DE", "FR", "US", "BR", "JP", "IN"}
	recs := make([]*record.Record, n)
	for i := range recs {
		v := fmt.Sprintf(`{"user_id":"u-%05d","session":"s-%06x","page":%q,"action":%q,"ms":%d,"country":%q,"device":"mobile","ts":%d}`,
			i*7919%50000, i*104729%(1<<24), pages[i%len(pages)], actions[i%len(actions)], 20+i*37%400,
			countries[i%len(countries)], 1714552200123+int64(i))
		recs[i] = &record.Record{
			Topic: "clicks", Partition: 3, Offset: int64(i),
			Key: fmt.Appendf(nil, "u-%05d", i*7919%50000), Value: []byte(v),
			Timestamp: time.UnixMilli(1714552200123 + int64(i)),
		}
	}
	return recs
}

func benchProcess(b *testing.B, s *sluicev1.JobSpec) {
	b.Helper()
	benchRecords(b, s, clickRecords(1024))
}

// benchRecords runs s's runner on recs, one record an op, in turn.
func benchRecords(b *testing.B, s *sluicev1.JobSpec, recs []*record.Record) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := mustCompile(b, s).NewRunnerContext(ctx) // as the worker does
	b.SetBytes(int64(len(recs[0].Value)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := r.Process(recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if res := r.Result(); res.Out == 0 || res.Failed != 0 {
		b.Fatalf("Result() = %d in, %d out, %d failed; want some out, none failed", res.In, res.Out, res.Failed)
	}
}

// One op is one record: a filter on a JSON field, then a count and sum keyed by
// another JSON field.
func BenchmarkFilterAndKey(b *testing.B) {
	b.Run("count", func(b *testing.B) {
		benchProcess(b, withAgg(spec(filter("json.ms > 100")), "json.country", ""))
	})
	b.Run("sum", func(b *testing.B) {
		benchProcess(b, withAgg(spec(filter("json.action == 'click' && json.ms > 100")), "json.page", "json.ms", count, sum, avg))
	})
}

// One op is one record: a filter on the raw value, then a count keyed by (part
// of) the key; no JSON.
func BenchmarkFilterOnValue(b *testing.B) {
	b.Run("key", func(b *testing.B) {
		benchProcess(b, withAgg(spec(filter(`value.contains('"action":"click"')`)), "key", ""))
	})
	b.Run("record_key", func(b *testing.B) {
		benchProcess(b, withAgg(spec(filter(`value.contains('"action":"click"')`)), "", ""))
	})
	b.Run("key_substring", func(b *testing.B) {
		benchProcess(b, withAgg(spec(filter(`value.contains('"action":"click"')`)), "key.substring(0, 4)", ""))
	})
	b.Run("collect", func(b *testing.B) {
		benchProcess(b, spec(filter(`value.contains('"action":"click"')`), mapKV("topic + '-' + key", "")))
	})
	// A loop over parts of the value: metered (cost tracking, interruption).
	b.Run("split_loop", func(b *testing.B) {
		benchProcess(b, withAgg(spec(filter(`value.split(',').exists(s, s.contains('"action":"click"'))`)), "", ""))
	})
}

// One op is one record of the click job of make bench ((a)): a filter on
// the event type, a count and sum keyed by page, over 1,000 pages and
// 200,000 distinct records (30 MB), so that, as in a worker reading a
// backlog, neither the records nor the aggregates stay in the CPU's caches.
func BenchmarkClickJob(b *testing.B) {
	const n, pages = 200_000, 1000
	recs := make([]*record.Record, n)
	types := []string{"click", "view", "scroll", "purchase"}
	for i := range recs {
		v := fmt.Sprintf(`{"type":%q,"page":"/p/%d","ms":%d,"user":"u-%05d","dev":"mobile","ts":%d,"ref":"/p/%d"}`,
			types[i*7%len(types)], i*7919%pages, i*37%2000, i*104729%50000, 1767225600123+int64(i), i*31%pages)
		recs[i] = &record.Record{Topic: "clicks", Partition: 3, Offset: int64(i), Value: []byte(v)}
	}
	benchRecords(b, withAgg(spec(filter("json.type == 'click'")), "json.page", "json.ms", count, sum), recs)
}
