package kafkasrc

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/record"
)

// stashed is what a stash would deliver below until.
func stashed(t *testing.T, s *stash, until int64) []record.Record {
	t.Helper()
	var out []record.Record
	if _, err := s.each(until, func(ch *stashChunk, sr *stashedRecord) error {
		var rec record.Record
		ch.fill(&rec, sr)
		out = append(out, rec)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStashCopiesIntoOneArena(t *testing.T) {
	ts := time.Unix(0, 1_714_552_200_123*1e6) // as franz-go makes it
	recs := []*kgo.Record{
		{Offset: 10, Key: []byte("k1"), Value: []byte("value-1"), Timestamp: ts},
		{Offset: 11, Key: nil, Value: []byte{}},
		{Offset: 12, Key: []byte("k3"), Value: nil, Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("hv")}, {Key: "n"}}},
	}
	var want []record.Record
	for _, r := range recs {
		rec := record.Record{Offset: r.Offset, Key: bytes.Clone(r.Key), Value: bytes.Clone(r.Value), Timestamp: r.Timestamp}
		for _, h := range r.Headers {
			rec.Headers = append(rec.Headers, record.Header{Key: h.Key, Value: bytes.Clone(h.Value)})
		}
		want = append(want, rec)
	}
	var s stash
	s.reserve(recs)
	var sizes int64
	for _, r := range recs {
		sizes += s.add(r)
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
	if s.len() != 3 || s.chunks != 1 || s.firstOffset() != 10 {
		t.Fatalf("stash of %d records in %d chunks from %d; want 3 in 1 from 10", s.len(), s.chunks, s.firstOffset())
	}
	if s.size != sizes || sizes != 3*messageOverhead+2+7+2+2+1+1 {
		t.Errorf("stash size %d, sizes added %d; want %d", s.size, sizes, 3*messageOverhead+2+7+2+2+1+1)
	}
	got := stashed(t, &s, 13)
	for i, rec := range got {
		w := want[i]
		if rec.Offset != w.Offset || !rec.Timestamp.Equal(w.Timestamp) || rec.Timestamp != w.Timestamp {
			t.Errorf("record %d: offset %d at %v, want %d at %v", i, rec.Offset, rec.Timestamp, w.Offset, w.Timestamp)
		}
		if !bytes.Equal(rec.Key, w.Key) || (rec.Key == nil) != (w.Key == nil) {
			t.Errorf("record %d: key %q (nil %v), want %q (nil %v)", i, rec.Key, rec.Key == nil, w.Key, w.Key == nil)
		}
		if !bytes.Equal(rec.Value, w.Value) || (rec.Value == nil) != (w.Value == nil) {
			t.Errorf("record %d: value %q (nil %v), want %q (nil %v)", i, rec.Value, rec.Value == nil, w.Value, w.Value == nil)
		}
	}
	if h := got[2].Headers; len(h) != 2 || h[0].Key != "h" || string(h[0].Value) != "hv" || h[1].Key != "n" || h[1].Value != nil {
		t.Errorf("headers %+v, want h=hv and n with no value", h)
	}
	// Appending to one copy cannot overwrite the next.
	if cap(got[0].Key) != len(got[0].Key) {
		t.Errorf("a stashed key has spare capacity %d: an append to it would overwrite its neighbour", cap(got[0].Key))
	}
	// Past the reservation, a chunk of its own.
	extra := &kgo.Record{Offset: 13, Value: []byte("late")}
	s.add(extra)
	extra.Value[0] = 'X'
	if got := stashed(t, &s, 14); len(got) != 4 || string(got[3].Value) != "late" || s.chunks != 2 {
		t.Errorf("after a record past the reservation: %d records, last %q, %d chunks; want 4, late, 2", len(got), got[len(got)-1].Value, s.chunks)
	}
}

func TestStashDrop(t *testing.T) {
	var s stash
	poll := func(from, n int64) {
		var recs []*kgo.Record
		for o := from; o < from+n; o++ {
			recs = append(recs, &kgo.Record{Offset: o, Value: []byte{byte(o)}})
		}
		s.reserve(recs)
		for _, r := range recs {
			s.add(r)
		}
	}
	poll(0, 3)
	s.reserve(nil) // a poll of control records only: an empty chunk
	poll(3, 4)
	offsets := func(until int64) []int64 {
		var out []int64
		for _, rec := range stashed(t, &s, until) {
			out = append(out, rec.Offset)
		}
		return out
	}
	if got := offsets(5); !slices.Equal(got, []int64{0, 1, 2, 3, 4}) {
		t.Fatalf("records below 5: %v", got)
	}
	one := s.size / 7
	if freed := s.dropBelow(2); freed != 2*one || s.len() != 5 || s.firstOffset() != 2 {
		t.Errorf("dropBelow(2) freed %d of %d a record, left %d from %d; want 2 records, 5 from 2", freed, one, s.len(), s.firstOffset())
	}
	// Across chunks: the first and the empty one go.
	if freed := s.drop(2); freed != 2*one || s.firstOffset() != 4 || s.chunks != 1 {
		t.Errorf("drop(2) freed %d, left first %d in %d chunks; want %d, 4, 1", freed, s.firstOffset(), s.chunks, 2*one)
	}
	if got := offsets(100); !slices.Equal(got, []int64{4, 5, 6}) {
		t.Errorf("records left %v, want [4 5 6]", got)
	}
	if freed := s.drop(10); freed != 3*one || s.len() != 0 || s.size != 0 || s.chunks != 0 || s.firstOffset() != -1 {
		t.Errorf("drop of all freed %d, left %d records of size %d in %d chunks", freed, s.len(), s.size, s.chunks)
	}
	// An error stops the walk at the record that failed.
	poll(7, 3)
	n, err := s.each(100, func(_ *stashChunk, sr *stashedRecord) error {
		if sr.offset == 8 {
			return errUnexpectedOffset
		}
		return nil
	})
	if n != 1 || err == nil {
		t.Errorf("each: %d, %v; want 1 and the error", n, err)
	}
}

// BenchmarkStash measures a record's way through a fetchConsumer with no
// broker: delivered from the poll (direct), or stashed by the poll and
// delivered from the stash by the next read (stashed), as the records a
// 1,024-partition job fetches past its ranges go. One op is one record.
func BenchmarkStash(b *testing.B) {
	const parts, perPart = 128, 60
	for _, stashed := range []bool{false, true} {
		b.Run(fmt.Sprintf("stashed=%v", stashed), func(b *testing.B) {
			var prs []*fetchPart
			for p := range int32(parts) {
				prs = append(prs, part(p))
			}
			c := offlineConsumer(b, prs...)
			c.stats = nil
			fs := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "t"}}}}
			for p := range int32(parts) {
				fp := kgo.FetchPartition{Partition: p, HighWatermark: 1 << 40}
				for i := range perPart {
					fp.Records = append(fp.Records, &kgo.Record{Topic: "t", Partition: p, Offset: int64(i),
						Key: fmt.Appendf(nil, "key-%07d", i), Value: make([]byte, 100), Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i))})
				}
				fs[0].Topics[0].Partitions = append(fs[0].Topics[0].Partitions, fp)
			}
			n := 0
			fn := func(r *record.Record) error { n += len(r.Value); return nil }
			ctx := context.Background()
			var base int64
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += parts * perPart {
				for k := range fs[0].Topics[0].Partitions {
					for i, r := range fs[0].Topics[0].Partitions[k].Records {
						r.Offset = base + int64(i)
					}
				}
				for _, pr := range prs {
					pr.reading = !stashed
					pr.r = Range{Topic: "t", Partition: pr.partition, From: base, Until: base + perPart}
				}
				var st ReadStats
				if _, err := c.handle(fs, fn, &st); err != nil {
					b.Fatal(err)
				}
				c.toHold = c.toHold[:0]
				if stashed {
					for _, pr := range prs {
						pr.reading, pr.paused = true, false
					}
					if _, err := c.readPrepared(ctx, prs, fn); err != nil {
						b.Fatal(err)
					}
				}
				for _, pr := range prs {
					pr.reading = false
				}
				base += perPart
			}
		})
	}
}

// TestStashEmptyFirstChunk: a poll of control records only leaves an
// empty chunk first; the records after it are found and dropped.
func TestStashEmptyFirstChunk(t *testing.T) {
	var s stash
	s.reserve(nil)
	s.add(&kgo.Record{Offset: 5, Value: []byte("a")})
	s.add(&kgo.Record{Offset: 6, Value: []byte("b")})
	if s.chunks != 3 || s.firstOffset() != 5 || s.len() != 2 {
		t.Fatalf("%d chunks, first %d, %d records; want 3, 5, 2", s.chunks, s.firstOffset(), s.len())
	}
	if n, _ := s.each(5, func(*stashChunk, *stashedRecord) error { t.Error("a record below 5"); return nil }); n != 0 {
		t.Errorf("each below the first record: %d", n)
	}
	if got := stashed(t, &s, 7); len(got) != 2 || string(got[0].Value) != "a" || string(got[1].Value) != "b" {
		t.Errorf("records %v", got)
	}
	s.drop(1)
	if s.firstOffset() != 6 || s.chunks != 1 {
		t.Errorf("after drop(1): first %d in %d chunks; want 6 in 1", s.firstOffset(), s.chunks)
	}
	s.dropBelow(7)
	if s.len() != 0 || s.size != 0 || s.chunks != 0 {
		t.Errorf("after dropBelow(7): %d records, size %d, %d chunks", s.len(), s.size, s.chunks)
	}
}
