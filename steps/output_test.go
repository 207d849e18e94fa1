package steps

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// Draining in chunks gives every output record once, in order, and leaves
// the runner holding only what came after the last drain.
func TestDrain(t *testing.T) {
	ks := &sluicev1.KafkaSink{Topic: "out", Headers: map[string]string{"k": "key"}}
	r := mustCompile(t, kafkaSpec(ks, filter("int(value) % 3 != 0"))).NewRunner()
	var got []*sluicev1.OutputRecord
	var want []*sluicev1.OutputRecord
	for off := range int64(1000) {
		v := fmt.Sprint(off)
		if err := r.Process(rec(off, "k"+v, v)); err != nil {
			t.Fatal(err)
		}
		if off%3 != 0 {
			want = append(want, routed(off, "k"+v, v, "out", -1, "k", "k"+v))
		}
		if r.Pending() == 100 {
			before := r.OutputBytes()
			chunk := r.Drain()
			if len(chunk) != 100 || before == 0 || r.OutputBytes() != 0 || r.Pending() != 0 {
				t.Fatalf("at offset %d: Drain gave %d records (OutputBytes %d before, %d after, Pending %d after)",
					off, len(chunk), before, r.OutputBytes(), r.Pending())
			}
			got = append(got, chunk...)
		}
	}
	res := r.Result()
	if res.In != 1000 || res.Out != 666 {
		t.Errorf("In, Out = %d, %d; want 1000, 666 (drained records count as out)", res.In, res.Out)
	}
	if len(res.Records) != 66 {
		t.Errorf("Result has %d records after the last drain, want 66", len(res.Records))
	}
	got = append(got, r.Drain()...)
	checkRecords(t, got, want)
	if len(r.Drain()) != 0 || len(r.Result().Records) != 0 {
		t.Errorf("a second Drain gave records")
	}
}

// The output limit fails the task on the record that passes it, with a
// message naming the limit, the record and what to do, whatever the record
// error policy; draining keeps a sink's runner under it.
func TestOutputLimit(t *testing.T) {
	limit := OutputLimit{Bytes: 1000, Field: "limits.max_task_output_bytes", Max: 48 << 20}
	for _, policy := range []sluicev1.RecordErrorPolicy{fail, skip} {
		s := spec(mapKV("", "value + value"))
		s.OnRecordError = policy
		r := mustCompile(t, s).NewRunner()
		r.SetOutputLimit(limit)
		var err error
		var off int64
		for off = 0; err == nil && off < 1000; off++ {
			err = r.Process(rec(off, "", "0123456789"))
		}
		// Each record is 20 bytes of value, 6 of topic and the overhead.
		per := int64(20 + 6 + recordOverhead)
		wantOff := 1000 / per // records 0 to wantOff-1 make exactly 1000 bytes: not above
		var le *OutputLimitError
		if !errors.As(err, &le) {
			t.Fatalf("policy %v: error %v after %d records, want an *OutputLimitError", policy, err, off)
		}
		if le.Offset != wantOff || le.Bytes != (wantOff+1)*per {
			t.Errorf("policy %v: limit passed at offset %d with %d bytes, want offset %d with %d", policy, le.Offset, le.Bytes, wantOff, (wantOff+1)*per)
		}
		wantMsg := fmt.Sprintf("task output of %d bytes exceeds limits.max_task_output_bytes 1000 (topic clicks partition 3 at offset %d): "+
			"lower limits.max_records_per_batch or limits.max_records_per_task, raise limits.max_task_output_bytes (at most 48 MiB), aggregate, or write to a Kafka sink",
			(wantOff+1)*per, wantOff)
		if err.Error() != wantMsg {
			t.Errorf("policy %v: error\n%s\nwant\n%s", policy, err, wantMsg)
		}
		var re *RecordError
		if errors.As(err, &re) {
			t.Errorf("policy %v: the limit is reported as a record error", policy)
		}
		if res := r.Result(); res.Failed != 0 || res.FirstError != "" {
			t.Errorf("policy %v: Failed %d, FirstError %q; the limit is no record failure", policy, res.Failed, res.FirstError)
		}
	}

	// At the maximum the message does not say to raise the limit.
	r := mustCompile(t, spec()).NewRunner()
	r.SetOutputLimit(OutputLimit{Bytes: 100, Field: "limits.max_task_output_bytes", Max: 100})
	var err error
	for off := int64(0); err == nil; off++ {
		err = r.Process(rec(off, "", strings.Repeat("x", 50)))
	}
	if strings.Contains(err.Error(), "raise") {
		t.Errorf("limit at its maximum: %v", err)
	}

	// A sink drained in chunks never reaches the limit.
	sink := mustCompile(t, kafkaSpec(&sluicev1.KafkaSink{Topic: "out"})).NewRunner()
	sink.SetOutputLimit(limit)
	for off := range int64(10000) {
		if err := sink.Process(rec(off, "", "0123456789")); err != nil {
			t.Fatalf("offset %d: %v", off, err)
		}
		if sink.OutputBytes() > 500 {
			sink.Drain()
		}
	}
}

// Aggregate state is bounded too: past the limit, the error says how many
// keys there are and to reduce their cardinality.
func TestAggregateLimit(t *testing.T) {
	r := mustCompile(t, withAgg(spec(), "value", "", count)).NewRunner()
	r.SetOutputLimit(OutputLimit{Bytes: 1000})
	var err error
	var off int64
	for off = 0; err == nil && off < 10000; off++ {
		// Few keys repeat: only new keys grow the state.
		err = r.Process(rec(off, "", fmt.Sprintf("key-%04d", off/2)))
	}
	var le *OutputLimitError
	if !errors.As(err, &le) || !le.Aggregate {
		t.Fatalf("error %v, want an aggregate *OutputLimitError", err)
	}
	per := int64(8 + aggregateOverhead)
	keys := 1000/per + 1
	if le.Keys != int(keys) || le.Bytes != keys*per {
		t.Errorf("limit passed with %d keys, %d bytes; want %d keys, %d bytes", le.Keys, le.Bytes, keys, keys*per)
	}
	want := fmt.Sprintf("aggregate state of %d keys (%d bytes) exceeds the 1000 bytes a task may return (topic clicks partition 3 at offset %d): "+
		"reduce the key cardinality of aggregate.key, or lower limits.max_records_per_batch or limits.max_records_per_task",
		keys, keys*per, le.Offset)
	if err.Error() != want {
		t.Errorf("error\n%s\nwant\n%s", err, want)
	}
	if le.Offset != 2*(keys-1) {
		t.Errorf("offset %d, want %d (the first record of key %d)", le.Offset, 2*(keys-1), keys)
	}
}

// Draining does not disturb the records' contents: a drained chunk stays
// intact while the runner goes on.
func TestDrainedRecordsStayIntact(t *testing.T) {
	r := mustCompile(t, kafkaSpec(&sluicev1.KafkaSink{Topic: "out"}, mapKV("key + '!'", ""))).NewRunner()
	buf := &record.Record{Topic: "clicks", Partition: 3}
	var chunks [][]*sluicev1.OutputRecord
	for off := range int64(30) {
		buf.Offset, buf.Key, buf.Value = off, []byte(fmt.Sprint(off)), []byte("v")
		if err := r.Process(buf); err != nil {
			t.Fatal(err)
		}
		if r.Pending() == 10 {
			chunks = append(chunks, r.Drain())
		}
	}
	for i, c := range chunks {
		for j, o := range c {
			if want := fmt.Sprintf("%d!", i*10+j); string(o.GetKey()) != want || o.GetOffset() != int64(i*10+j) {
				t.Errorf("chunk %d record %d: key %q offset %d, want %q", i, j, o.GetKey(), o.GetOffset(), want)
			}
		}
	}
}
