package kafkasrc

import (
	"slices"
	"testing"
)

func TestEvictable(t *testing.T) {
	parts := map[TopicPartition]*partState{}
	add := func(p int32, lastRead uint64, reading bool) {
		parts[TopicPartition{"t", p}] = &partState{topic: "t", partition: p, lastRead: lastRead, reading: reading}
	}
	const reads = 100
	add(0, reads-idleReads-1, false) // idle past idleReads: evicted
	add(1, reads-idleReads, false)   // idle exactly idleReads: kept
	add(2, 1, true)                  // being read: kept however old
	add(3, reads, false)
	var got []int32
	for _, s := range evictable(parts, reads) {
		got = append(got, s.partition)
	}
	if !slices.Equal(got, []int32{0}) {
		t.Errorf("evictable = %v, want [0]", got)
	}

	// Past maxAssigned, the least recently read of the rest go too.
	clear(parts)
	for p := range int32(maxAssigned + 3) {
		add(p, reads-uint64(p%idleReads), p == 0)
	}
	gone := evictable(parts, reads)
	if len(gone) != 3 {
		t.Fatalf("%d evicted past maxAssigned, want 3", len(gone))
	}
	for _, s := range gone {
		if s.lastRead != reads-idleReads+1 || s.reading {
			t.Errorf("evicted %+v, want the least recently read of those not being read", s)
		}
	}
}

func TestFirstOpen(t *testing.T) {
	s := func(topic string, p int32, next, until int64) *partState {
		return &partState{topic: topic, partition: p, next: next, reading: true, r: Range{Topic: topic, Partition: p, Until: until}}
	}
	prs := []*partState{s("b", 0, 5, 10), s("a", 3, 10, 10), s("a", 7, 2, 10), s("a", 5, 0, 10)}
	if got := firstOpen(prs); got.topic != "a" || got.partition != 5 {
		t.Errorf("firstOpen = %s/%d, want a/5 (a/3 is finished)", got.topic, got.partition)
	}
	done := []*partState{s("b", 0, 10, 10), s("a", 3, 10, 10)}
	if got := firstOpen(done); got.topic != "a" || got.partition != 3 {
		t.Errorf("firstOpen(all finished) = %s/%d, want the lowest, a/3", got.topic, got.partition)
	}
}
