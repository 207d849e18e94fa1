package coordinator

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestLeaderCache(t *testing.T) {
	var logs bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	c := newLeaderCache()
	clock := time.Unix(1000, 0)
	c.now = func() time.Time { return clock }
	p := func(n int32) partitionKey { return partitionKey{"t", n} }

	var asked [][]partitionKey
	var fail error
	fetch := func(ctx context.Context, pks []partitionKey) (map[partitionKey]string, error) {
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > leaderLookupTimeout {
			t.Errorf("lookup deadline %v, %v: want one within %s", d, ok, leaderLookupTimeout)
		}
		asked = append(asked, pks)
		if fail != nil {
			return nil, fail
		}
		out := map[partitionKey]string{}
		for _, pk := range pks {
			out[pk] = "broker-" + string(rune('0'+pk.Partition))
		}
		return out, nil
	}
	get := func(pks ...partitionKey) map[partitionKey]string {
		return c.get(context.Background(), "j", pks, fetch, logger)
	}

	if got := get(p(0), p(1)); got[p(1)] != "broker-1" || len(asked) != 1 {
		t.Fatalf("first batch: %v after %d lookups, want a lookup", got, len(asked))
	}
	get(p(0), p(1))
	if len(asked) != 1 {
		t.Fatalf("%d lookups: the second batch within %s must use the cache", len(asked), leaderRefresh)
	}
	// A partition new to the job is looked up with the others.
	if got := get(p(2)); got[p(2)] != "broker-2" || !slices.Equal(asked[1], []partitionKey{p(0), p(1), p(2)}) {
		t.Fatalf("new partition: %v, asked %v, want t/0, t/1 and t/2 asked", got, asked[1])
	}
	clock = clock.Add(leaderRefresh)
	get(p(0))
	if len(asked) != 3 {
		t.Fatalf("%d lookups: leaders older than %s must be looked up again", len(asked), leaderRefresh)
	}

	// A failing lookup places as consistent mode does, is logged once, and
	// is not retried by every batch.
	fail = errors.New("broker unreachable")
	clock = clock.Add(leaderRefresh)
	for range 3 {
		if got := get(p(0), p(5)); got != nil {
			t.Fatalf("failed lookup gave %v, want no leaders", got)
		}
	}
	if len(asked) != 4 {
		t.Fatalf("%d lookups: a failed lookup is retried after %s, not by every batch", len(asked), leaderRefresh)
	}
	clock = clock.Add(leaderRefresh)
	get(p(0))
	if n := strings.Count(logs.String(), "partition leader lookup failed"); n != 1 || len(asked) != 5 {
		t.Fatalf("%d warnings after %d lookups, want 1 after 5:\n%s", n, len(asked), logs.String())
	}
	fail = nil
	clock = clock.Add(leaderRefresh)
	if got := get(p(0)); got[p(0)] != "broker-0" || !strings.Contains(logs.String(), "succeeds again") {
		t.Fatalf("after recovery: %v\n%s", got, logs.String())
	}

	// A job that stopped asking is forgotten.
	clock = clock.Add(leaderForget + time.Second)
	c.get(context.Background(), "other", []partitionKey{p(0)}, fetch, logger)
	if _, ok := c.jobs["j"]; ok || len(c.jobs) != 1 {
		t.Errorf("jobs %v: j should be forgotten", c.jobs)
	}
}
