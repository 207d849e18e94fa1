package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

func TestSendableMakesResultsMarshalable(t *testing.T) {
	res := &sluicev1.TaskResult{
		Key:   &sluicev1.TaskKey{Job: "j", BatchId: 1},
		Error: "record t/0 offset 3: steps[0].filter: bad value \"\xff\xfe\"",
		Aggregates: []*sluicev1.KeyAggregate{
			{Key: "\xff\xfe", Count: 1},
			{Key: "caf\xc3\xa9", Count: 2},
		},
		Records: []*sluicev1.OutputRecord{{Key: []byte("\xff"), Value: []byte("\xfe"), Topic: "t",
			Headers: []*sluicev1.Header{{Key: "h\xff", Value: []byte("\xff")}}}},
	}
	if _, err := proto.Marshal(res); err == nil {
		t.Fatal("the test result marshals as it is; it tests nothing")
	}
	res = sendable(res)
	if _, err := proto.Marshal(res); err != nil {
		t.Fatalf("marshal after sendable: %v", err)
	}
	if a := res.Aggregates[0]; a.Key != `\xff\xfe` || string(a.KeyBytes) != "\xff\xfe" {
		t.Errorf("invalid key: key %q, key_bytes %q; want the escaped form and the exact bytes", a.Key, a.KeyBytes)
	}
	if a := res.Aggregates[1]; a.Key != "café" || a.KeyBytes != nil {
		t.Errorf("valid key changed: key %q, key_bytes %q", a.Key, a.KeyBytes)
	}
	if r := res.Records[0]; string(r.Key) != "\xff" || string(r.Value) != "\xfe" {
		t.Errorf("record bytes changed: %q %q", r.Key, r.Value)
	}
	if !strings.Contains(res.Error, "offset 3: steps[0].filter") {
		t.Errorf("error lost its context: %q", res.Error)
	}
}

func TestSendableBoundsErrorsAndSize(t *testing.T) {
	res := sendable(&sluicev1.TaskResult{Error: strings.Repeat("é", 10000)})
	if len(res.Error) > steps.MaxErrorBytes {
		t.Errorf("error of %d bytes, want at most %d", len(res.Error), steps.MaxErrorBytes)
	}
	if _, err := proto.Marshal(res); err != nil {
		t.Errorf("cut error does not marshal: %v", err)
	}

	big := &sluicev1.TaskResult{
		Key:   &sluicev1.TaskKey{Job: "j", BatchId: 4, Index: 1},
		Range: &sluicev1.OffsetRange{Topic: "t", Partition: 1, UntilOffset: 9},
	}
	value := make([]byte, 1<<20)
	for range 70 {
		big.Records = append(big.Records, &sluicev1.OutputRecord{Value: value})
	}
	res = sendable(big)
	if !res.Fatal || len(res.Records) != 0 || !strings.Contains(res.Error, "lower limits.max_records_per_batch") {
		t.Errorf("oversized result: fatal %v, %d records, error %q; want a fatal error saying what to change", res.Fatal, len(res.Records), res.Error)
	}
	if res.GetKey().GetBatchId() != 4 || res.GetRange().GetUntilOffset() != 9 {
		t.Errorf("oversized result lost its key or range: %v", res)
	}
}

func TestClassify(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	recErr := &steps.RecordError{Topic: "t", Partition: 0, Offset: 5, Field: "steps[0].filter", Err: errors.New("no such overload")}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		err  error
		want errClass
	}{
		{"record rejected by the steps", context.Background(), fmt.Errorf("read t/0 [0, 9): %w", recErr), errFatal},
		{"spec does not compile", context.Background(), fmt.Errorf("compile steps: %w", &steps.FieldError{Field: "steps[0].filter"}), errFatal},
		{"sink topic missing", context.Background(), fmt.Errorf("write: %w", kafkasrc.ErrPermanent), errFatal},
		{"offsets gone", context.Background(), fmt.Errorf("read: %w", kafkasrc.ErrOffsetOutOfRange), errFailed},
		{"broker away", context.Background(), errors.New("all brokers down"), errTransient},
		{"deadline, whatever the error says", cancelled, recErr, errTransient},
	} {
		if got := classify(tt.ctx, tt.err); got != tt.want {
			t.Errorf("%s: classify = %d, want %d", tt.name, got, tt.want)
		}
	}
}
