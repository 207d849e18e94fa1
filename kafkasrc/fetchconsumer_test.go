package kafkasrc

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/record"
)

// offlineConsumer is a fetchConsumer whose client never connects: pausing
// and resuming are bookkeeping in the client.
func offlineConsumer(t *testing.T, parts ...*fetchPart) *fetchConsumer {
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

func TestStashCopiesIntoOneArena(t *testing.T) {
	c := offlineConsumer(t)
	pr := part(0)
	pr.next = 10
	recs := []*kgo.Record{
		{Offset: 10, Key: []byte("k1"), Value: []byte("value-1")},
		{Offset: 11, Key: nil, Value: []byte{}},
		{Offset: 12, Key: []byte("k3"), Value: nil, Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("hv")}, {Key: "n"}}},
	}
	orig := make([][]byte, 0, 2*len(recs))
	for _, r := range recs {
		orig = append(orig, bytes.Clone(r.Key), bytes.Clone(r.Value))
	}
	c.reserve(pr, recs)
	for _, r := range recs {
		if _, err := c.keep(pr, r); err != nil {
			t.Fatal(err)
		}
	}
	// The fetch's buffers are the client's to reuse: the stash must not
	// see them change.
	for _, r := range recs {
		for _, b := range [][]byte{r.Key, r.Value} {
			for i := range b {
				b[i] = 'X'
			}
		}
		for _, h := range r.Headers {
			for i := range h.Value {
				h.Value[i] = 'X'
			}
		}
	}
	if len(pr.stash) != 3 || pr.next != 13 {
		t.Fatalf("stash %d records, next %d; want 3, 13", len(pr.stash), pr.next)
	}
	for i, s := range pr.stash {
		if !bytes.Equal(s.key, orig[2*i]) || (s.key == nil) != (orig[2*i] == nil) {
			t.Errorf("record %d: key %q (nil %v), want %q (nil %v)", i, s.key, s.key == nil, orig[2*i], orig[2*i] == nil)
		}
		if !bytes.Equal(s.value, orig[2*i+1]) || (s.value == nil) != (orig[2*i+1] == nil) {
			t.Errorf("record %d: value %q (nil %v), want %q (nil %v)", i, s.value, s.value == nil, orig[2*i+1], orig[2*i+1] == nil)
		}
	}
	if h := pr.stash[2].headers; len(h) != 2 || h[0].Key != "h" || string(h[0].Value) != "hv" || h[1].Value != nil {
		t.Errorf("headers %+v, want h=hv and n with no value", h)
	}
	// One arena: every copy is in the same allocation, and appending to
	// one copy cannot overwrite the next.
	if cap(pr.stash[0].key) != len(pr.stash[0].key) {
		t.Errorf("a stashed key has spare capacity %d: an append to it would overwrite its neighbour", cap(pr.stash[0].key))
	}
	if got := c.stashBytes; got != pr.stashSize || got <= 0 {
		t.Errorf("stash bytes %d, partition's %d", got, pr.stashSize)
	}
	// Past the arena (a record the reservation did not count), a copy of
	// its own.
	extra := &kgo.Record{Offset: 13, Value: []byte("late")}
	if _, err := c.keep(pr, extra); err != nil {
		t.Fatal(err)
	}
	extra.Value[0] = 'X'
	if got := string(pr.stash[3].value); got != "late" {
		t.Errorf("value past the arena %q, want late", got)
	}
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
	if open.next != 4 || len(open.stash) != 1 || len(done.stash) != 2 {
		t.Errorf("next %d, stashes %d and %d; want 4, 1 and 2", open.next, len(open.stash), len(done.stash))
	}
}
