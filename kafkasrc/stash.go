package kafkasrc

import (
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/record"
)

// stash is the data records of one partition of a fetchConsumer polled
// ahead of the reads that deliver them, in offset order. Their keys,
// values and headers are copied out of the fetch (the records of a fetch
// share its buffer, and a few stashed records would keep whole fetches
// alive) into one arena a poll; their places are kept in a slice with no
// pointers, which the garbage collector does not scan. On a
// 1,024-partition job about half of the records go through a stash; a
// slice of records with pointers, grown poll by poll, cost 220 ns a record
// against 163 now and 25 for one delivered from the poll (BenchmarkStash).
//
// A read of a thousand ranges of a record or two touches every stash once
// or twice, so the first chunk and the first record's offset are kept in
// the stash itself (in the partition's state): a stash whose first record
// is past a range costs no memory load, and a record of the first chunk
// one (at 10,000 partitions, a slice of chunks to go through first made
// the walks a quarter of the workers' time).
type stash struct {
	cur    stashChunk   // the first chunk
	rest   []stashChunk // the chunks after it
	chunks int          // 0, or 1 + len(rest)
	head   int          // the records of cur already dropped
	first  int64        // the first record's offset; only when n > 0
	n      int          // the records held
	size   int64        // their sizes (stashedRecord.size)
}

// stashChunk is what one poll stashed of the partition.
type stashChunk struct {
	arena   []byte
	recs    []stashedRecord
	headers [][]record.Header // stashedRecord.headers-1 indexes it
}

// stashedRecord is a stashed record's offset, its timestamp in Unix
// nanoseconds (franz-go makes a record's time from them: it comes back
// the same), and the places of its key and value in its chunk's arena.
type stashedRecord struct {
	offset, timestamp int64
	key, value        span
	headers           int32 // 1 + its index in the chunk's headers; 0: none
	size              int32
}

// noTime is the stashed timestamp of a record with none (the zero time,
// which Unix nanoseconds cannot hold).
const noTime = math.MinInt64

// span is a place in an arena; n -1 is a nil slice.
type span struct{ off, n int32 }

func (s *stash) len() int { return s.n }

// firstOffset is the offset of the first record, -1 with none.
func (s *stash) firstOffset() int64 {
	if s.n == 0 {
		return -1
	}
	return s.first
}

// chunk is the i-th chunk.
func (s *stash) chunk(i int) *stashChunk {
	if i == 0 {
		return &s.cur
	}
	return &s.rest[i-1]
}

// push appends ch as the last chunk.
func (s *stash) push(ch stashChunk) {
	if s.chunks == 0 {
		s.cur = ch
	} else {
		s.rest = append(s.rest, ch)
	}
	s.chunks++
}

// reserve starts a chunk for records, the rest of the partition's part of
// a poll: one allocation for their bytes and one for their places.
func (s *stash) reserve(records []*kgo.Record) {
	n := 0
	for _, r := range records {
		n += len(r.Key) + len(r.Value)
		for _, h := range r.Headers {
			n += len(h.Value)
		}
	}
	s.push(stashChunk{arena: make([]byte, 0, min(n, math.MaxInt32)), recs: make([]stashedRecord, 0, len(records))})
}

// stashSize is the size add gives r: its bytes, header keys and
// messageOverhead.
func stashSize(r *kgo.Record) int64 {
	n := int64(len(r.Key) + len(r.Value) + messageOverhead)
	for _, h := range r.Headers {
		n += int64(len(h.Key) + len(h.Value))
	}
	return n
}

// add copies r into the last chunk, or into a chunk of its own when that
// has no room for it (a record reserve did not count), and returns its
// size.
func (s *stash) add(r *kgo.Record) int64 {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Value)
	}
	if s.chunks == 0 {
		s.reserve([]*kgo.Record{r})
	} else if last := s.chunk(s.chunks - 1); cap(last.arena)-len(last.arena) < n || len(last.recs) == cap(last.recs) {
		s.reserve([]*kgo.Record{r})
	}
	ch := s.chunk(s.chunks - 1)
	size := stashSize(r)
	sr := stashedRecord{offset: r.Offset, timestamp: noTime, key: ch.carve(r.Key), value: ch.carve(r.Value),
		size: int32(min(size, math.MaxInt32))}
	if !r.Timestamp.IsZero() {
		sr.timestamp = r.Timestamp.UnixNano()
	}
	if len(r.Headers) > 0 {
		hs := make([]record.Header, len(r.Headers))
		for i, h := range r.Headers {
			hs[i] = record.Header{Key: h.Key, Value: ch.slice(ch.carve(h.Value))}
		}
		ch.headers = append(ch.headers, hs)
		sr.headers = int32(len(ch.headers))
	}
	ch.recs = append(ch.recs, sr)
	if s.n == 0 {
		s.first = sr.offset
	}
	s.n++
	s.size += int64(sr.size)
	return int64(sr.size)
}

// carve copies b to the end of the arena, which has room for it.
func (ch *stashChunk) carve(b []byte) span {
	if b == nil {
		return span{n: -1}
	}
	off := len(ch.arena)
	ch.arena = append(ch.arena, b...)
	return span{int32(off), int32(len(b))}
}

// slice is the bytes at sp, with no room to append over its neighbour.
func (ch *stashChunk) slice(sp span) []byte {
	if sp.n < 0 {
		return nil
	}
	end := int(sp.off) + int(sp.n)
	return ch.arena[sp.off:end:end]
}

// fill makes rec the stashed record sr of ch (its topic and partition are
// the caller's).
func (ch *stashChunk) fill(rec *record.Record, sr *stashedRecord) {
	rec.Offset, rec.Timestamp = sr.offset, time.Time{}
	if sr.timestamp != noTime {
		rec.Timestamp = time.Unix(0, sr.timestamp)
	}
	rec.Key, rec.Value, rec.Headers = ch.slice(sr.key), ch.slice(sr.value), nil
	if sr.headers > 0 {
		rec.Headers = ch.headers[sr.headers-1]
	}
}

// each calls fn with the records below until, in order, and returns how
// many it called it with; it stops at fn's first error.
func (s *stash) each(until int64, fn func(*stashChunk, *stashedRecord) error) (int, error) {
	if s.n == 0 || s.first >= until {
		return 0, nil
	}
	n, head := 0, s.head
	for i := range s.chunks {
		ch := s.chunk(i)
		for j := head; j < len(ch.recs); j++ {
			if ch.recs[j].offset >= until {
				return n, nil
			}
			if err := fn(ch, &ch.recs[j]); err != nil {
				return n, err
			}
			n++
		}
		head = 0
	}
	return n, nil
}

// drop drops the first n records and returns their sizes; a chunk goes
// with its last record.
func (s *stash) drop(n int) int64 {
	if n <= 0 || s.n == 0 {
		return 0 // without a load of the first record's memory
	}
	var freed int64
	for n > 0 && s.n > 0 {
		take := min(n, len(s.cur.recs)-s.head)
		for _, sr := range s.cur.recs[s.head : s.head+take] {
			freed += int64(sr.size)
		}
		s.head += take
		s.n -= take
		n -= take
		if s.head == len(s.cur.recs) {
			s.popChunk()
		}
	}
	if s.n == 0 {
		*s = stash{}
		return freed
	}
	for s.head == len(s.cur.recs) {
		s.popChunk() // empty chunks: polls of control records
	}
	s.first = s.cur.recs[s.head].offset
	s.size -= freed
	return freed
}

// popChunk drops the first chunk.
func (s *stash) popChunk() {
	s.head = 0
	s.chunks--
	if len(s.rest) == 0 {
		s.cur = stashChunk{}
		return
	}
	s.cur = s.rest[0]
	s.rest[0] = stashChunk{}
	s.rest = s.rest[1:]
	if len(s.rest) == 0 {
		s.rest = nil
	}
}

// dropBelow drops the records below offset and returns their sizes.
func (s *stash) dropBelow(offset int64) int64 {
	n, _ := s.each(offset, func(*stashChunk, *stashedRecord) error { return nil })
	return s.drop(n)
}
