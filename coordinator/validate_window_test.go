package coordinator

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func windowed(length, slide time.Duration) func(s *sluicev1.JobSpec) {
	return func(s *sluicev1.JobSpec) {
		s.BatchInterval = durationpb.New(2 * time.Second)
		s.Aggregate.Window = &sluicev1.AggregateWindow{Length: durationpb.New(length)}
		if slide != 0 {
			s.Aggregate.Window.Slide = durationpb.New(slide)
		}
	}
}

func TestValidateStateValid(t *testing.T) {
	for name, modify := range map[string]func(s *sluicev1.JobSpec){
		"running":               func(s *sluicev1.JobSpec) { s.Aggregate.Running = true },
		"tumbling window":       windowed(10*time.Second, 0),
		"sliding window":        windowed(10*time.Second, 4*time.Second),
		"running and windowed":  func(s *sluicev1.JobSpec) { windowed(4*time.Second, 2*time.Second)(s); s.Aggregate.Running = true },
		"max state keys at cap": func(s *sluicev1.JobSpec) { s.Aggregate.Running = true; s.Limits.MaxStateKeys = 20000 },
		"event time, any whole milliseconds": func(s *sluicev1.JobSpec) {
			windowed(1500*time.Millisecond, 500*time.Millisecond)(s)
			s.Aggregate.Window.EventTime = &sluicev1.EventTime{TimeExpr: `timestamp(int(size(value)))`, WatermarkDelay: durationpb.New(5 * time.Second)}
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := validJobSpec()
			modify(s)
			if err := Validate(s); err != nil {
				t.Fatalf("Validate(%s) = %v, want nil", name, err)
			}
		})
	}
}

func TestValidateStateInvalid(t *testing.T) {
	tests := []struct {
		name        string
		modify      func(s *sluicev1.JobSpec)
		wantField   string
		wantInError []string
	}{
		{name: "window without a length", modify: func(s *sluicev1.JobSpec) { s.Aggregate.Window = &sluicev1.AggregateWindow{} },
			wantField: "aggregate.window.length", wantInError: []string{"required"}},
		{name: "length not a multiple of the interval", modify: windowed(5*time.Second, 0),
			wantField: "aggregate.window.length", wantInError: []string{"5s is not a multiple of batch_interval 2s"}},
		{name: "slide not a multiple of the interval", modify: windowed(10*time.Second, 3*time.Second),
			wantField: "aggregate.window.slide", wantInError: []string{"3s is not a multiple of batch_interval 2s"}},
		{name: "length not a multiple of the default interval", modify: func(s *sluicev1.JobSpec) {
			s.BatchInterval = nil
			s.Aggregate.Window = &sluicev1.AggregateWindow{Length: durationpb.New(1500 * time.Millisecond)}
		}, wantField: "aggregate.window.length", wantInError: []string{"batch_interval 1s"}},
		{name: "negative length", modify: windowed(-2*time.Second, 0), wantField: "aggregate.window.length", wantInError: []string{"positive"}},
		{name: "length above 24h", modify: windowed(48*time.Hour, 0), wantField: "aggregate.window.length", wantInError: []string{"24h"}},
		{name: "slide above the length", modify: windowed(4*time.Second, 6*time.Second),
			wantField: "aggregate.window.slide", wantInError: []string{"above aggregate.window.length 4s"}},
		{name: "too many windows per batch", modify: windowed(1000*time.Second, 2*time.Second),
			wantField: "aggregate.window.slide", wantInError: []string{"500 windows"}},
		{name: "slide not a duration", modify: func(s *sluicev1.JobSpec) {
			windowed(4*time.Second, 0)(s)
			s.Aggregate.Window.Slide = &durationpb.Duration{Seconds: 1, Nanos: -1}
		}, wantField: "aggregate.window.slide"},
		{name: "event-time length not whole milliseconds", modify: func(s *sluicev1.JobSpec) {
			windowed(1500*time.Microsecond, 0)(s)
			s.Aggregate.Window.EventTime = &sluicev1.EventTime{}
		}, wantField: "aggregate.window.length", wantInError: []string{"1.5ms is not a whole number of milliseconds"}},
		{name: "negative watermark delay", modify: func(s *sluicev1.JobSpec) {
			windowed(4*time.Second, 0)(s)
			s.Aggregate.Window.EventTime = &sluicev1.EventTime{WatermarkDelay: durationpb.New(-time.Second)}
		}, wantField: "aggregate.window.event_time.watermark_delay", wantInError: []string{"-1s"}},
		{name: "time expression not a timestamp", modify: func(s *sluicev1.JobSpec) {
			windowed(4*time.Second, 0)(s)
			s.Aggregate.Window.EventTime = &sluicev1.EventTime{TimeExpr: `size(value)`}
		}, wantField: "aggregate.window.event_time.time_expr", wantInError: []string{"want a timestamp"}},
		{name: "max state keys negative", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxStateKeys = -1 },
			wantField: "limits.max_state_keys", wantInError: []string{"-1", "default 10000"}},
		{name: "max state keys above the ceiling", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxStateKeys = 20001 },
			wantField: "limits.max_state_keys", wantInError: []string{"20001", "to 20000 keys"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := validJobSpec()
			tc.modify(s)
			err := Validate(s)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate(%s) = %v, want a *ValidationError for %s", tc.name, err, tc.wantField)
			}
			if ve.Field != tc.wantField {
				t.Errorf("Validate(%s).Field = %q, want %q (error: %v)", tc.name, ve.Field, tc.wantField, err)
			}
			for _, sub := range tc.wantInError {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("Validate(%s) = %q, want it to contain %q", tc.name, err, sub)
				}
			}
		})
	}
}

func updateStream(modify func(k *sluicev1.KafkaSink)) func(s *sluicev1.JobSpec) {
	return func(s *sluicev1.JobSpec) {
		s.Aggregate.Running = true
		k := &sluicev1.KafkaSink{Topic: "totals"}
		if modify != nil {
			modify(k)
		}
		s.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: k}}
	}
}

func TestValidateUpdateStream(t *testing.T) {
	for name, modify := range map[string]func(*sluicev1.JobSpec){
		"running totals": updateStream(nil),
		"windows": func(s *sluicev1.JobSpec) {
			updateStream(nil)(s)
			s.Aggregate.Running = false
			windowed(4*time.Second, 0)(s)
		},
		"transactional set": updateStream(func(k *sluicev1.KafkaSink) { k.Mode = sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL }),
	} {
		t.Run(name, func(t *testing.T) {
			s := validJobSpec()
			modify(s)
			if err := Validate(s); err != nil {
				t.Fatalf("Validate(%s) = %v, want nil", name, err)
			}
		})
	}
	tests := []struct {
		name, wantField, wantInError string
		modify                       func(*sluicev1.JobSpec)
	}{
		{"per-batch aggregate", "sink.kafka", "cannot follow an aggregate", func(s *sluicev1.JobSpec) {
			updateStream(nil)(s)
			s.Aggregate.Running = false
		}},
		{"topic expression", "sink.kafka.topic", "needs a fixed topic", updateStream(func(k *sluicev1.KafkaSink) { k.Topic, k.TopicExpr = "", `"t"` })},
		{"partition expression", "sink.kafka.partition_expr", "partitioned by key", updateStream(func(k *sluicev1.KafkaSink) { k.PartitionExpr = "0" })},
		{"headers", "sink.kafka.headers", "Sluice's headers only", updateStream(func(k *sluicev1.KafkaSink) { k.Headers = map[string]string{"h": "key"} })},
		{"idempotent", "sink.kafka.mode", "exactly once", updateStream(func(k *sluicev1.KafkaSink) { k.Mode = sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := validJobSpec()
			tc.modify(s)
			err := Validate(s)
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.wantField || !strings.Contains(err.Error(), tc.wantInError) {
				t.Fatalf("Validate(%s) = %v, want a *ValidationError for %s containing %q", tc.name, err, tc.wantField, tc.wantInError)
			}
		})
	}
}
