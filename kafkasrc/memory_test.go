package kafkasrc

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// syncBuffer is a bytes.Buffer safe for the log pump's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A consumer with the smallest prefetch share reads partitions many times
// larger than its share exactly; source properties asking for a larger
// prefetch are lowered, and that is logged once for the cluster, not once
// per consumer.
func TestReadSmallPrefetch(t *testing.T) {
	_, cl := newTestCluster(t, 2, "big")
	k := newKgo(t, cl, kgo.ProducerBatchMaxBytes(1<<20))
	value := strings.Repeat("x", 4096)
	var truth [2][]want
	for p := range int32(2) {
		for i := 0; i < 3000; i += 500 {
			rs := keyed(i, 500)
			for _, r := range rs {
				r.Value = append(r.Value, value...)
			}
			truth[p] = append(truth[p], produce(t, k, "big", p, rs)...)
		}
	}
	var logs syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Warn})
	c := NewCache(64, logger, WithMemory(64*MinConsumerShare/2)) // below the minimum share: the minimum
	t.Cleanup(c.Close)
	cl.Properties = map[string]string{"queued.max.messages.kbytes": "1048576", "fetch.max.bytes": "104857600"}
	for p := range int32(2) {
		var all []want
		for _, r := range []Range{{"big", p, 0, 1000}, {"big", p, 1000, 2999}, {"big", p, 2999, 3000}} {
			got, _ := mustCollect(t, c, cl, r)
			all = append(all, got...)
		}
		sameRecords(t, "partition "+string(rune('0'+p)), all, truth[p])
	}
	if n := strings.Count(logs.String(), "source properties lowered"); n != 1 {
		t.Errorf("%d log lines about lowered properties, want 1:\n%s", n, logs.String())
	}
	for _, s := range []string{"queued.max.messages.kbytes=1024 (asked for 1048576)", "fetch.max.bytes=1048576 (asked for 104857600)"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log does not say %q:\n%s", s, logs.String())
		}
	}
}
