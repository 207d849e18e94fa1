package offsetstore

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// A batch's ranges and a job's committed offsets are written once per
// batch and grow with the job's partitions. etcd holds them in a compact
// form (Batch.packed_ranges, CommittedOffsets.packed_offsets: the ranges of
// a topic column by column, as packed varints), about 8 bytes a partition
// instead of 21-27, which keeps the commit of a 10,000-partition batch
// around 200 KB, far below etcd's request limit. Records written before
// keep their plain form and read the same.

// packMin: fewer entries are stored plainly (nothing to gain).
const packMin = 8

// encode marshals m for etcd, compacting a Batch's ranges or a
// CommittedOffsets' offsets. m is not modified: it may be read meanwhile.
func encode(m proto.Message) (string, error) {
	switch v := m.(type) {
	case *sluicev1.Batch:
		if len(v.GetRanges()) >= packMin {
			b := without(v, "ranges").(*sluicev1.Batch)
			b.PackedRanges = packRanges(v.GetRanges())
			m = b
		}
	case *sluicev1.CommittedOffsets:
		if len(v.GetOffsets()) >= packMin {
			o := without(v, "offsets").(*sluicev1.CommittedOffsets)
			o.PackedOffsets = packOffsets(v.GetOffsets())
			m = o
		}
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("marshal %T: %w", m, err)
	}
	return string(b), nil
}

// Decode unmarshals a value of the store as read from etcd (by watchers of
// its keys): the compact forms are expanded.
func Decode(raw []byte, m proto.Message) error { return decode(raw, m) }

// decode unmarshals a value written by encode (or before it existed).
func decode(raw []byte, m proto.Message) error {
	if err := proto.Unmarshal(raw, m); err != nil {
		return err
	}
	switch v := m.(type) {
	case *sluicev1.Batch:
		if len(v.GetPackedRanges()) > 0 {
			v.Ranges = append(v.Ranges, unpackRanges(v.GetPackedRanges())...)
			v.PackedRanges = nil
		}
	case *sluicev1.CommittedOffsets:
		if len(v.GetPackedOffsets()) > 0 {
			v.Offsets = append(v.Offsets, unpackOffsets(v.GetPackedOffsets())...)
			v.PackedOffsets = nil
		}
	}
	return nil
}

// without returns a new message with m's fields but the one named skip,
// sharing their values (m is only read).
func without(m proto.Message, skip protoreflect.Name) proto.Message {
	src := m.ProtoReflect()
	dst := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() != skip {
			dst.Set(fd, v)
		}
		return true
	})
	return dst.Interface()
}

// packRanges stores rs as runs of one topic each, in order.
func packRanges(rs []*sluicev1.OffsetRange) []*sluicev1.TopicRanges {
	var out []*sluicev1.TopicRanges
	var run *sluicev1.TopicRanges
	for _, r := range rs {
		if run == nil || run.GetTopic() != r.GetTopic() {
			run = &sluicev1.TopicRanges{Topic: r.GetTopic()}
			out = append(out, run)
		}
		run.Partitions = append(run.Partitions, r.GetPartition())
		run.FromOffsets = append(run.FromOffsets, r.GetFromOffset())
		run.Lengths = append(run.Lengths, r.GetUntilOffset()-r.GetFromOffset())
	}
	return out
}

func unpackRanges(runs []*sluicev1.TopicRanges) []*sluicev1.OffsetRange {
	var out []*sluicev1.OffsetRange
	for _, run := range runs {
		n := min(len(run.GetPartitions()), len(run.GetFromOffsets()), len(run.GetLengths()))
		for i := range n {
			from := run.GetFromOffsets()[i]
			out = append(out, &sluicev1.OffsetRange{Topic: run.GetTopic(), Partition: run.GetPartitions()[i], FromOffset: from, UntilOffset: from + run.GetLengths()[i]})
		}
	}
	return out
}

// packOffsets stores os as runs of one topic each, in order.
func packOffsets(os []*sluicev1.PartitionOffset) []*sluicev1.TopicOffsets {
	var out []*sluicev1.TopicOffsets
	var run *sluicev1.TopicOffsets
	for _, o := range os {
		if run == nil || run.GetTopic() != o.GetTopic() {
			run = &sluicev1.TopicOffsets{Topic: o.GetTopic()}
			out = append(out, run)
		}
		run.Partitions = append(run.Partitions, o.GetPartition())
		run.Offsets = append(run.Offsets, o.GetOffset())
	}
	return out
}

func unpackOffsets(runs []*sluicev1.TopicOffsets) []*sluicev1.PartitionOffset {
	var out []*sluicev1.PartitionOffset
	for _, run := range runs {
		n := min(len(run.GetPartitions()), len(run.GetOffsets()))
		for i := range n {
			out = append(out, &sluicev1.PartitionOffset{Topic: run.GetTopic(), Partition: run.GetPartitions()[i], Offset: run.GetOffsets()[i]})
		}
	}
	return out
}
