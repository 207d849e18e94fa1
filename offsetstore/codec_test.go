package offsetstore

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestCodecRoundTrip: batches and offsets come back from etcd exactly as
// written, whether stored compactly (runs of a topic, a topic met again
// later, offsets of any size) or plainly (few entries, or written before
// the compact form existed); the value written is never modified.
func TestCodecRoundTrip(t *testing.T) {
	ranges := func(n int) []*sluicev1.OffsetRange {
		var rs []*sluicev1.OffsetRange
		for i := range n {
			topic := []string{"a", "b", "a"}[i*3/max(n, 1)]
			from := int64(i) * 1_000_003
			rs = append(rs, &sluicev1.OffsetRange{Topic: topic, Partition: int32(i % 7), FromOffset: from, UntilOffset: from + int64(i%3)})
		}
		return rs
	}
	for _, n := range []int{0, 1, packMin - 1, packMin, 100, 10_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b := &sluicev1.Batch{Job: "j", Id: 7, BatchTime: timestamppb.Now(), State: sluicev1.BatchState_BATCH_STATE_COMMITTED,
				Ranges: ranges(n), Cap: &sluicev1.BatchCap{Rate: 5}}
			o := &sluicev1.CommittedOffsets{BatchId: 7}
			for _, r := range b.GetRanges() {
				o.Offsets = append(o.Offsets, &sluicev1.PartitionOffset{Topic: r.GetTopic(), Partition: r.GetPartition(), Offset: r.GetUntilOffset()})
			}
			wantB, wantO := proto.Clone(b), proto.Clone(o)
			for _, m := range []proto.Message{b, o} {
				raw, err := encode(m)
				if err != nil {
					t.Fatal(err)
				}
				got := m.ProtoReflect().New().Interface()
				if err := Decode([]byte(raw), got); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, m) {
					t.Fatalf("%T with %d entries changed through etcd", m, n)
				}
				plain, _ := proto.Marshal(m)
				if n >= packMin && len(raw) >= len(plain) {
					t.Errorf("%T with %d entries: %d bytes stored, %d plain", m, n, len(raw), len(plain))
				}
				if n == 10_000 {
					t.Logf("%T of 10,000 entries: %d bytes stored, %d plain", m, len(raw), len(plain))
				}
				// A value written plainly (before the compact form) reads the same.
				old := m.ProtoReflect().New().Interface()
				if err := Decode(plain, old); err != nil || !proto.Equal(old, m) {
					t.Fatalf("a plain %T does not read back: %v", m, err)
				}
			}
			if !proto.Equal(b, wantB) || !proto.Equal(o, wantO) {
				t.Fatal("encode modified the value it wrote")
			}
		})
	}
}
