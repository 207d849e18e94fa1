package coordinator

import (
	"maps"
	"testing"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestChangedOffsets(t *testing.T) {
	tp := func(p int32) kafkasrc.TopicPartition { return kafkasrc.TopicPartition{Topic: "t", Partition: p} }
	offs := &sluicev1.CommittedOffsets{Offsets: []*sluicev1.PartitionOffset{
		{Topic: "t", Partition: 0, Offset: 10},
		{Topic: "t", Partition: 1, Offset: 20},
		{Topic: "t", Partition: 2, Offset: 30},
	}}
	all := map[kafkasrc.TopicPartition]int64{tp(0): 10, tp(1): 20, tp(2): 30}
	for _, tc := range []struct {
		name string
		last map[kafkasrc.TopicPartition]int64
		want map[kafkasrc.TopicPartition]int64
	}{
		{"nothing mirrored yet", nil, all},
		{"unchanged", all, map[kafkasrc.TopicPartition]int64{}},
		{"one moved, one new", map[kafkasrc.TopicPartition]int64{tp(0): 10, tp(1): 15}, map[kafkasrc.TopicPartition]int64{tp(1): 20, tp(2): 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotAll, changed := changedOffsets(offs, tc.last)
			if !maps.Equal(gotAll, all) {
				t.Errorf("all = %v, want %v", gotAll, all)
			}
			if !maps.Equal(changed, tc.want) {
				t.Errorf("changed = %v, want %v", changed, tc.want)
			}
		})
	}
}
