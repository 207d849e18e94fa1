package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// readmeSection returns the README's text from the heading to the next
// heading of the same or a higher level.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q", heading)
	}
	s = s[i+len(heading)+2:]
	if j := strings.Index(s, "\n## "); j >= 0 {
		s = s[:j]
	}
	if j := strings.Index(s, "\n### "); j >= 0 {
		s = s[:j]
	}
	return s
}

// jsonBlocks returns the ```json blocks of a README section.
func jsonBlocks(section string) []string {
	var out []string
	for _, part := range strings.Split(section, "```json\n")[1:] {
		out = append(out, part[:strings.Index(part, "```")])
	}
	return out
}

// TestReadmeWindowsAndRunningState runs the README's stateful example job
// (running totals per page, event-time windows of a minute on json.ts with
// a 10s watermark delay), then the same job with the README's update
// stream sink: the totals, the emitted window and the open one are exact,
// and the sink holds the updates.
func TestReadmeWindowsAndRunningState(t *testing.T) {
	blocks := jsonBlocks(readmeSection(t, "### Windows and running state"))
	if len(blocks) != 2 {
		t.Fatalf("README section has %d json blocks, want the job and the sink", len(blocks))
	}
	tc := newTestCluster(t, clusterOptions{topics: []string{"pageviews", "pageview-totals"}, partitions: 4})
	spec := &sluicev1.JobSpec{}
	if err := protojson.Unmarshal([]byte(blocks[0]), spec); err != nil {
		t.Fatalf("README job: %v\n%s", err, blocks[0])
	}
	spec.Source.BootstrapServers = tc.Brokers
	withSink := proto.Clone(spec).(*sluicev1.JobSpec)
	if err := protojson.Unmarshal([]byte("{"+blocks[1]+"}"), withSink); err != nil {
		t.Fatalf("README sink: %v\n%s", err, blocks[1])
	}
	proto.Merge(withSink, spec)
	withSink.Name = spec.GetName() + "-kafka"
	ctx := context.Background()
	for _, s := range []*sluicev1.JobSpec{spec, withSink} {
		if _, err := tc.Client.Submit(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	cl := tc.producer()
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	pages := []string{"/", "/cart", "/search"}
	totals := map[string]int64{}
	minutes := []map[string]int64{{}, {}}
	ends := map[string]int64{}
	n := 0
	produce := func(minute, count int) {
		for i := range count {
			page := pages[(n*5+n/3)%len(pages)]
			ts := t0.Add(time.Duration(minute)*time.Minute + time.Duration(i*7919%60000)*time.Millisecond)
			if i == count-1 {
				ts = t0.Add(time.Duration(minute+1)*time.Minute - time.Millisecond)
			}
			p := int32(n % 4)
			n++
			cl.Produce(ctx, &kgo.Record{Topic: "pageviews", Partition: p, Value: fmt.Appendf(nil, `{"page":%q,"ts":%q}`, page, ts.Format(time.RFC3339Nano))}, nil)
			totals[page]++
			minutes[minute][page]++
			ends[fmt.Sprintf("pageviews/%d", p)]++
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*sluicev1.JobSpec{spec, withSink} {
			tc.waitOffsets(s.GetName(), maps.Clone(ends), 60*time.Second)
		}
	}
	produce(0, 500)
	produce(1, 300) // the watermark reaches 10:01:49.999: the first minute is emitted

	for _, s := range []*sluicev1.JobSpec{spec, withSink} {
		st, err := tc.Client.State(ctx, s.GetName())
		if err != nil {
			t.Fatal(err)
		}
		if got := countsOf(st.GetTotals()); !maps.Equal(got, totals) {
			t.Fatalf("%s: totals %v, want %v", s.GetName(), got, totals)
		}
		if len(st.GetOpenWindows()) != 1 || !st.GetOpenWindows()[0].GetStart().AsTime().Equal(t0.Add(time.Minute)) {
			t.Fatalf("%s: open windows %v, want the second minute's", s.GetName(), st.GetOpenWindows())
		}
		if got := countsOf(st.GetOpenWindows()[0].GetAggregates()); !maps.Equal(got, minutes[1]) {
			t.Fatalf("%s: open window %v, want %v", s.GetName(), got, minutes[1])
		}
		res, err := tc.Client.Results(ctx, s.GetName(), 0, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		var emitted []*sluicev1.WindowResult
		for _, r := range res.GetResults() {
			emitted = append(emitted, r.GetWindows()...)
		}
		if len(emitted) != 1 || !emitted[0].GetStart().AsTime().Equal(t0) || !emitted[0].GetEnd().AsTime().Equal(t0.Add(time.Minute)) {
			t.Fatalf("%s: emitted windows %v, want the first minute", s.GetName(), emitted)
		}
		if got := countsOf(emitted[0].GetAggregates()); !maps.Equal(got, minutes[0]) {
			t.Fatalf("%s: first minute %v, want %v", s.GetName(), got, minutes[0])
		}
	}

	// The CLI: sluice state (text and JSON) and the window rows of sluice results.
	text := run(t, sluiceBin, "state", spec.GetName(), "--coordinator", tc.Addr)
	for page, n := range totals {
		if !containsFields(text, "total", page, fmt.Sprint(n)) {
			t.Errorf("sluice state shows no row total %s %d:\n%s", page, n, text)
		}
	}
	if !strings.Contains(text, "2026-11-21T10:01:00Z/2026-11-21T10:02:00Z (open)") {
		t.Errorf("sluice state shows no open window of 10:01:\n%s", text)
	}
	stJSON := &sluicev1.GetStateResponse{}
	if err := protojson.Unmarshal([]byte(run(t, sluiceBin, "state", spec.GetName(), "--coordinator", tc.Addr, "-o", "json")), stJSON); err != nil {
		t.Fatal(err)
	}
	if got := countsOf(stJSON.GetTotals()); !maps.Equal(got, totals) {
		t.Errorf("sluice state -o json totals %v, want %v", got, totals)
	}
	if text := run(t, sluiceBin, "results", spec.GetName(), "--coordinator", tc.Addr); !strings.Contains(text, "2026-11-21T10:00:00Z/2026-11-21T10:01:00Z") {
		t.Errorf("sluice results shows no row of the emitted window:\n%s", text)
	}

	// The update stream: the last total of each page, and the first minute.
	ups := readUpdates(t, tc.Brokers, "pageview-totals", len(pages)+len(minutes[0]))
	last, window := map[string]int64{}, map[string]int64{}
	for _, u := range ups {
		if u.value.Window != nil {
			window[u.key] = u.value.Count
		} else {
			last[u.key] = u.value.Count
		}
	}
	if !maps.Equal(last, totals) || !maps.Equal(window, minutes[0]) {
		t.Fatalf("update stream: last totals %v, window %v; want %v, %v", last, window, totals, minutes[0])
	}
}
