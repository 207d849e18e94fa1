package kafkasrc

import (
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/record"
)

// offlineConsumer is a fetchConsumer whose client never connects: pausing
// and resuming are bookkeeping in the client.
func offlineConsumer(t testing.TB, parts ...*fetchPart) *fetchConsumer {
	t.Helper()
	kc, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	c := &fetchConsumer{kc: kc, parts: map[TopicPartition]*fetchPart{}}
	for _, pr := range parts {
		c.parts[pr.tp()] = pr
	}
	return c
}

func part(p int32) *fetchPart { return &fetchPart{partState: partState{topic: "t", partition: p}} }

// clientPaused is what the client holds paused of topic t.
func clientPaused(c *fetchConsumer) []int32 {
	ps := slices.Clone(c.kc.PauseFetchPartitions(nil)["t"])
	slices.Sort(ps)
	return ps
}

func TestPauseHeldAfterNextPoll(t *testing.T) {
	p0, p1, p2 := part(0), part(1), part(2)
	c := offlineConsumer(t, p0, p1, p2)
	c.pauseLater(p0)
	c.pauseLater(p1)
	if !p0.paused || p0.held || len(clientPaused(c)) > 0 {
		t.Fatalf("after pauseLater: paused %v held %v, client pauses %v; want paused, not yet held, none", p0.paused, p0.held, clientPaused(c))
	}
	// A read resumes p1 before the next poll: the client never pauses it.
	c.resume([]*fetchPart{p1})
	c.hold()
	if got := clientPaused(c); !slices.Equal(got, []int32{0}) || !p0.held || p1.paused || p1.held {
		t.Errorf("after hold: client pauses %v (want [0]); p0 held %v, p1 paused %v held %v", got, p0.held, p1.paused, p1.held)
	}
	if len(c.toHold) != 0 {
		t.Errorf("%d partitions left to hold", len(c.toHold))
	}
	c.resume([]*fetchPart{p0, p2})
	if got := clientPaused(c); len(got) != 0 || p0.paused || p0.held {
		t.Errorf("after resume: client pauses %v, p0 paused %v held %v; want none", got, p0.paused, p0.held)
	}
	// A partition removed before the poll is not paused in the client.
	c.pauseLater(p2)
	delete(c.parts, p2.tp())
	c.hold()
	if got := clientPaused(c); len(got) != 0 {
		t.Errorf("client pauses %v after holding a removed partition", got)
	}
}

func TestCapStashesPausesAllOutsideTheRead(t *testing.T) {
	open, done, idle, pending := part(0), part(1), part(2), part(3)
	open.reading, open.r, open.next = true, Range{Topic: "t", Partition: 0, From: 0, Until: 10}, 5
	done.reading, done.r, done.next = true, Range{Topic: "t", Partition: 1, From: 0, Until: 10}, 10
	c := offlineConsumer(t, open, done, idle, pending)
	c.pauseLater(pending)

	c.stashBytes = c.stashCap() - 1
	c.capStashes()
	if got := clientPaused(c); len(got) != 0 {
		t.Fatalf("below the cap, the client pauses %v", got)
	}
	c.stashBytes = c.stashCap()
	c.capStashes()
	if got := clientPaused(c); !slices.Equal(got, []int32{1, 2, 3}) {
		t.Errorf("at the cap, the client pauses %v, want every partition but the open range's [1 2 3]", got)
	}
	for _, pr := range []*fetchPart{done, idle, pending} {
		if !pr.paused || !pr.held {
			t.Errorf("partition %d: paused %v held %v, want both", pr.partition, pr.paused, pr.held)
		}
	}
	if open.paused {
		t.Error("the open range's partition was paused")
	}
	// Held already, the pending one is not paused again after the poll.
	c.hold()
	if got := clientPaused(c); !slices.Equal(got, []int32{1, 2, 3}) || len(c.toHold) != 0 {
		t.Errorf("after hold, the client pauses %v with %d left to hold", got, len(c.toHold))
	}
}

// TestProgressOncePerPoll: handle delivers a poll's records of an open
// range and marks the range's progress once, after them; a partition whose
// records all went to its stash makes none.
func TestProgressOncePerPoll(t *testing.T) {
	open, done := part(0), part(1)
	open.reading, open.r = true, Range{Topic: "t", Partition: 0, From: 0, Until: 3}
	done.reading, done.r, done.next = true, Range{Topic: "t", Partition: 1, From: 0, Until: 2}, 2
	c := offlineConsumer(t, open, done)
	before := time.Now()
	open.progress, done.progress = before.Add(-time.Minute), before.Add(-time.Minute)
	recs := func(p int32, offsets ...int64) []*kgo.Record {
		var out []*kgo.Record
		for _, o := range offsets {
			out = append(out, &kgo.Record{Topic: "t", Partition: p, Offset: o, Value: []byte("v")})
		}
		return out
	}
	fs := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "t", Partitions: []kgo.FetchPartition{
		{Partition: 0, HighWatermark: 10, Records: recs(0, 0, 1, 2, 3)},
		{Partition: 1, HighWatermark: 10, Records: recs(1, 2, 3)},
	}}}}}
	var got []int64
	var at []time.Time
	var st ReadStats
	finished, err := c.handle(fs, func(r *record.Record) error {
		got, at = append(got, r.Offset), append(at, open.progress)
		return nil
	}, &st)
	if err != nil || finished != 1 {
		t.Fatalf("handle: %d finished, %v; want 1, nil", finished, err)
	}
	if !slices.Equal(got, []int64{0, 1, 2}) || st.Records != 3 {
		t.Errorf("delivered %v (%d), want [0 1 2]", got, st.Records)
	}
	for i, a := range at {
		if !a.Before(before) {
			t.Errorf("progress moved before the poll's records were delivered (record %d)", i)
		}
	}
	if open.progress.Before(before) {
		t.Errorf("the open range's progress did not move: %v", open.progress)
	}
	if !done.progress.Before(before) {
		t.Error("a partition whose records were all stashed made progress")
	}
	if open.next != 4 || open.stash.len() != 1 || done.stash.len() != 2 {
		t.Errorf("next %d, stashes %d and %d; want 4, 1 and 2", open.next, open.stash.len(), done.stash.len())
	}
}
