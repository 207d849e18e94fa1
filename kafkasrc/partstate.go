package kafkasrc

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// partState is what a pool consumer of either kind knows of one assigned
// partition: where its stream is and the read in progress.
//
// Every offset below next has been polled by the consumer (or found to be
// a gap), and every data record below consumed has been delivered or
// belongs to no later read of the partition; the consumer's stash holds
// the data records in [consumed, next), in offset order. A read from From
// continues without a seek when consumed <= From <= next.
type partState struct {
	topic     string // addressable for kafka.TopicPartition
	partition int32
	consumed  int64
	next      int64
	lastRead  uint64 // the consumer's read count when a read last asked for it

	// The read in progress, when reading.
	r       Range
	reading bool
}

func (s *partState) state() *partState { return s }

// belowNext fails for a polled offset below the partition's position: the
// client went back, which would deliver records twice.
func (s *partState) belowNext(offset int64) error {
	if offset < s.next {
		return fmt.Errorf("%s/%d: polled offset %d below the position %d: %w", s.topic, s.partition, offset, s.next, errUnexpectedOffset)
	}
	return nil
}

// open is whether the partition is part of the read in progress and not
// finished.
func (s *partState) open() bool { return s.reading && s.next < s.r.Until }

// stated is a pool consumer's partition.
type stated interface{ state() *partState }

// evictable returns the partitions of parts that no read of the last
// idleReads (of reads so far) asked for, and the least recently read
// beyond maxAssigned.
func evictable[P stated](parts map[TopicPartition]P, reads uint64) []P {
	var gone, kept []P
	for _, p := range parts {
		if s := p.state(); !s.reading && reads-s.lastRead > idleReads {
			gone = append(gone, p)
		} else if !s.reading {
			kept = append(kept, p)
		}
	}
	if over := len(parts) - len(gone) - maxAssigned; over > 0 {
		sort.Slice(kept, func(i, j int) bool { return kept[i].state().lastRead < kept[j].state().lastRead })
		gone = append(gone, kept[:min(over, len(kept))]...)
	}
	return gone
}

// firstOpen is an unfinished range of prs, the lowest, for error messages;
// the lowest range when all are finished.
func firstOpen[P stated](prs []P) P {
	var open []P
	for _, p := range prs {
		if p.state().open() {
			open = append(open, p)
		}
	}
	if len(open) == 0 {
		open = prs
	}
	return slices.MinFunc(open, func(a, b P) int {
		sa, sb := a.state(), b.state()
		return cmp.Or(strings.Compare(sa.r.Topic, sb.r.Topic), cmp.Compare(sa.r.Partition, sb.r.Partition))
	})
}
