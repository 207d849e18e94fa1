package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// validSpec returns a new spec that passes Validate and exercises most fields.
func validJobSpec() *sluicev1.JobSpec {
	return &sluicev1.JobSpec{
		Name: "clicks-per-user",
		Source: &sluicev1.KafkaSource{
			BootstrapServers: "localhost:9092,localhost:9093",
			Topics:           []string{"clicks", "orders.v1"},
			StartingOffsets: &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{Explicit: &sluicev1.ExplicitOffsets{
				Offsets: []*sluicev1.PartitionOffset{
					{Topic: "clicks", Partition: 0, Offset: 10},
					{Topic: "clicks", Partition: 1, Offset: 0},
					{Topic: "orders.v1", Partition: 0, Offset: 5},
				},
				Others: sluicev1.StartPosition_START_POSITION_LATEST,
			}}},
			IsolationLevel: sluicev1.IsolationLevel_ISOLATION_LEVEL_READ_COMMITTED,
			Properties:     map[string]string{"fetch.max.bytes": "1048576", "security.protocol": "plaintext"},
		},
		BatchInterval: durationpb.New(time.Second),
		Steps: []*sluicev1.Step{
			{Kind: &sluicev1.Step_Filter{Filter: `value != ""`}},
			{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{Key: `topic + "/" + key`, Value: `size(value)`}}},
			{Kind: &sluicev1.Step_Filter{Filter: `partition >= 0`}},
		},
		Aggregate: &sluicev1.Aggregate{
			Key:   "key",
			Value: "double(size(value))",
			Functions: []sluicev1.AggregateFunction{
				sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT,
				sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM,
			},
		},
		Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Collect{Collect: &sluicev1.CollectSink{}}},
		Limits: &sluicev1.Limits{
			MaxRatePerPartition: 1000,
			MaxRecordsPerBatch:  10000,
			MaxTaskAttempts:     4,
			TaskTimeout:         durationpb.New(time.Minute),
		},
		OnRecordError: sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_SKIP,
	}
}

func setExplicitOffsets(s *sluicev1.JobSpec, offs ...*sluicev1.PartitionOffset) {
	s.Source.StartingOffsets = &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{
		Explicit: &sluicev1.ExplicitOffsets{Offsets: offs},
	}}
}

func setStartPosition(s *sluicev1.JobSpec, p sluicev1.StartPosition) {
	s.Source.StartingOffsets = &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: p}}
}

func setFilters(s *sluicev1.JobSpec, exprs ...string) {
	s.Steps = nil
	for _, e := range exprs {
		s.Steps = append(s.Steps, &sluicev1.Step{Kind: &sluicev1.Step_Filter{Filter: e}})
	}
}

func TestValidateValid(t *testing.T) {
	tests := []struct {
		name   string
		modify func(s *sluicev1.JobSpec)
	}{
		{name: "full spec", modify: func(s *sluicev1.JobSpec) {}},
		{name: "minimal spec", modify: func(s *sluicev1.JobSpec) {
			*s = sluicev1.JobSpec{Name: "a", Source: &sluicev1.KafkaSource{BootstrapServers: "k:9092", Topics: []string{"t"}}}
		}},
		{name: "name of 63 characters", modify: func(s *sluicev1.JobSpec) { s.Name = strings.Repeat("a", 63) }},
		{name: "name with digits and dashes", modify: func(s *sluicev1.JobSpec) { s.Name = "0-job-9" }},
		{name: "topic name of 249 characters", modify: func(s *sluicev1.JobSpec) {
			s.Source.Topics = []string{strings.Repeat("t", 249)}
			s.Source.StartingOffsets = nil
		}},
		{name: "batch interval of 10ms", modify: func(s *sluicev1.JobSpec) { s.BatchInterval = durationpb.New(10 * time.Millisecond) }},
		{name: "zero limits", modify: func(s *sluicev1.JobSpec) { s.Limits = &sluicev1.Limits{} }},
		{name: "batch interval of 24h", modify: func(s *sluicev1.JobSpec) { s.BatchInterval = durationpb.New(24 * time.Hour) }},
		{name: "largest limits", modify: func(s *sluicev1.JobSpec) {
			s.Limits = &sluicev1.Limits{
				MaxRatePerPartition:   1_000_000_000,
				MaxRecordsPerBatch:    1_000_000_000_000,
				MaxTaskAttempts:       100,
				TaskTimeout:           durationpb.New(24 * time.Hour),
				MaxTaskRetries:        1000,
				MinRatePerPartition:   1_000_000_000,
				InitialRate:           1_000_000_000_000,
				MaxRecordsPerTask:     1_000_000_000_000,
				MaxTaskOutputBytes:    48 << 20,
				SpeculationMultiplier: 1000,
				Backpressure: &sluicev1.Backpressure{Proportional: proto.Float64(100), Integral: proto.Float64(100),
					Derivative: proto.Float64(100), MinRate: 1_000_000_000_000},
			}
		}},
		{name: "backpressure and speculation off", modify: func(s *sluicev1.JobSpec) {
			s.Limits = &sluicev1.Limits{Backpressure: &sluicev1.Backpressure{Enabled: proto.Bool(false)}, SpeculationMultiplier: -1}
		}},
		{name: "fixed placement", modify: func(s *sluicev1.JobSpec) {
			s.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED, Fixed: []*sluicev1.FixedPlacement{
				{Topic: "clicks", WorkerLabel: "zone=a"}, {Topic: "clicks", Partitions: []int32{0, 3}, WorkerLabel: "gpu"},
				{Topic: "orders.v1", Partitions: []int32{3}, WorkerLabel: "host:b_1"},
			}}
		}},
		{name: "brokers placement", modify: func(s *sluicev1.JobSpec) {
			s.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_BROKERS}
		}},
		{name: "smallest limits", modify: func(s *sluicev1.JobSpec) {
			s.Limits = &sluicev1.Limits{MaxRatePerPartition: 1, MaxRecordsPerBatch: 1, MaxTaskAttempts: 1, TaskTimeout: durationpb.New(time.Millisecond)}
		}},
		{name: "loop over the JSON value", modify: func(s *sluicev1.JobSpec) {
			setFilters(s, `json.items.exists(i, i.tags.exists(t, t == "sale"))`)
		}},
		{name: "start at latest", modify: func(s *sluicev1.JobSpec) { setStartPosition(s, sluicev1.StartPosition_START_POSITION_LATEST) }},
		{name: "same partition number in two topics", modify: func(s *sluicev1.JobSpec) {
			setExplicitOffsets(s, &sluicev1.PartitionOffset{Topic: "clicks", Partition: 3}, &sluicev1.PartitionOffset{Topic: "orders.v1", Partition: 3})
		}},
		{name: "aggregate COUNT without value", modify: func(s *sluicev1.JobSpec) {
			s.Aggregate = &sluicev1.Aggregate{Functions: []sluicev1.AggregateFunction{sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := validJobSpec()
			tc.modify(s)
			if err := Validate(s); err != nil {
				t.Errorf("Validate(%s) = %v, want nil", tc.name, err)
			}
		})
	}
}

func TestValidateInvalid(t *testing.T) {
	tests := []struct {
		name      string
		modify    func(s *sluicev1.JobSpec)
		wantField string
		// wantInError are substrings of Error().
		wantInError []string
	}{
		{name: "empty name", modify: func(s *sluicev1.JobSpec) { s.Name = "" }, wantField: "name"},
		{name: "uppercase name", modify: func(s *sluicev1.JobSpec) { s.Name = "Clicks" }, wantField: "name", wantInError: []string{`"Clicks"`}},
		{name: "name too long", modify: func(s *sluicev1.JobSpec) { s.Name = strings.Repeat("a", 64) }, wantField: "name"},
		{name: "name starting with a dash", modify: func(s *sluicev1.JobSpec) { s.Name = "-job" }, wantField: "name"},
		{name: "name ending with a dash", modify: func(s *sluicev1.JobSpec) { s.Name = "job-" }, wantField: "name"},
		{name: "name with an underscore", modify: func(s *sluicev1.JobSpec) { s.Name = "my_job" }, wantField: "name"},
		{name: "source missing", modify: func(s *sluicev1.JobSpec) { s.Source = nil }, wantField: "source"},
		{name: "bootstrap servers empty", modify: func(s *sluicev1.JobSpec) { s.Source.BootstrapServers = "" }, wantField: "source.bootstrap_servers"},
		{name: "no topics", modify: func(s *sluicev1.JobSpec) { s.Source.Topics = nil }, wantField: "source.topics"},
		{name: "topic with a space", modify: func(s *sluicev1.JobSpec) { s.Source.Topics = []string{"clicks", "bad topic"} }, wantField: "source.topics[1]", wantInError: []string{`"bad topic"`}},
		{name: "topic named dot", modify: func(s *sluicev1.JobSpec) { s.Source.Topics = []string{"."} }, wantField: "source.topics[0]"},
		{name: "topic named dot dot", modify: func(s *sluicev1.JobSpec) { s.Source.Topics = []string{".."} }, wantField: "source.topics[0]"},
		{name: "empty topic", modify: func(s *sluicev1.JobSpec) { s.Source.Topics = []string{""} }, wantField: "source.topics[0]"},
		{name: "topic name too long", modify: func(s *sluicev1.JobSpec) { s.Source.Topics = []string{strings.Repeat("t", 250)} }, wantField: "source.topics[0]"},
		{name: "duplicate topic", modify: func(s *sluicev1.JobSpec) { s.Source.Topics = []string{"clicks", "orders.v1", "clicks"} }, wantField: "source.topics[2]", wantInError: []string{"twice"}},
		{name: "owned property group.id", modify: func(s *sluicev1.JobSpec) { s.Source.Properties["group.id"] = "mine" }, wantField: "source.properties", wantInError: []string{"group.id"}},
		{name: "owned property bootstrap.servers", modify: func(s *sluicev1.JobSpec) { s.Source.Properties["bootstrap.servers"] = "x:1" }, wantField: "source.properties", wantInError: []string{"bootstrap.servers"}},
		{name: "owned go. property", modify: func(s *sluicev1.JobSpec) { s.Source.Properties["go.logs.channel.enable"] = "true" }, wantField: "source.properties"},
		{name: "unknown isolation level", modify: func(s *sluicev1.JobSpec) { s.Source.IsolationLevel = 7 }, wantField: "source.isolation_level"},
		{name: "batch interval 1ms", modify: func(s *sluicev1.JobSpec) { s.BatchInterval = durationpb.New(time.Millisecond) }, wantField: "batch_interval", wantInError: []string{"10ms"}},
		{name: "batch interval negative", modify: func(s *sluicev1.JobSpec) { s.BatchInterval = durationpb.New(-time.Second) }, wantField: "batch_interval"},
		{name: "batch interval out of range", modify: func(s *sluicev1.JobSpec) { s.BatchInterval = &durationpb.Duration{Seconds: 1, Nanos: -1} }, wantField: "batch_interval"},
		{name: "negative max rate", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxRatePerPartition = -1 }, wantField: "limits.max_rate_per_partition"},
		{name: "negative max records", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxRecordsPerBatch = -1 }, wantField: "limits.max_records_per_batch"},
		{name: "negative max task attempts", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxTaskAttempts = -1 }, wantField: "limits.max_task_attempts"},
		{name: "negative task timeout", modify: func(s *sluicev1.JobSpec) { s.Limits.TaskTimeout = durationpb.New(-time.Second) }, wantField: "limits.task_timeout"},
		{name: "batch interval over 24h", modify: func(s *sluicev1.JobSpec) { s.BatchInterval = durationpb.New(24*time.Hour + time.Second) }, wantField: "batch_interval", wantInError: []string{"24h"}},
		{name: "batch interval of 10000 years", modify: func(s *sluicev1.JobSpec) { s.BatchInterval = &durationpb.Duration{Seconds: 315_576_000_000} }, wantField: "batch_interval", wantInError: []string{"24h"}},
		{name: "max rate over 1e9", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxRatePerPartition = 1_000_000_001 }, wantField: "limits.max_rate_per_partition", wantInError: []string{"1000000000"}},
		{name: "max rate overflowing rate times interval", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxRatePerPartition = 1 << 62 }, wantField: "limits.max_rate_per_partition"},
		{name: "max records over 1e12", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxRecordsPerBatch = 1_000_000_000_001 }, wantField: "limits.max_records_per_batch", wantInError: []string{"1000000000000"}},
		{name: "max task attempts over 100", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxTaskAttempts = 101 }, wantField: "limits.max_task_attempts", wantInError: []string{"1 to 100"}},
		{name: "zero task timeout", modify: func(s *sluicev1.JobSpec) { s.Limits.TaskTimeout = durationpb.New(0) }, wantField: "limits.task_timeout", wantInError: []string{"omit it"}},
		{name: "task timeout over 24h", modify: func(s *sluicev1.JobSpec) { s.Limits.TaskTimeout = durationpb.New(25 * time.Hour) }, wantField: "limits.task_timeout", wantInError: []string{"24h"}},
		{name: "task timeout overflowing a deadline", modify: func(s *sluicev1.JobSpec) { s.Limits.TaskTimeout = &durationpb.Duration{Seconds: 315_576_000_000} }, wantField: "limits.task_timeout"},
		{name: "task timeout out of range", modify: func(s *sluicev1.JobSpec) { s.Limits.TaskTimeout = &durationpb.Duration{Seconds: 1, Nanos: -1} }, wantField: "limits.task_timeout"},
		{name: "negative max task retries", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxTaskRetries = -1 }, wantField: "limits.max_task_retries", wantInError: []string{"0 to 1000"}},
		{name: "max task retries over 1000", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxTaskRetries = 1001 }, wantField: "limits.max_task_retries", wantInError: []string{"0 to 1000"}},
		{name: "negative min rate", modify: func(s *sluicev1.JobSpec) { s.Limits.MinRatePerPartition = -1 }, wantField: "limits.min_rate_per_partition"},
		{name: "min rate above max rate", modify: func(s *sluicev1.JobSpec) { s.Limits.MinRatePerPartition = 2000 }, wantField: "limits.min_rate_per_partition", wantInError: []string{"max_rate_per_partition 1000"}},
		{name: "negative initial rate", modify: func(s *sluicev1.JobSpec) { s.Limits.InitialRate = -5 }, wantField: "limits.initial_rate", wantInError: []string{"100000"}},
		{name: "initial rate over 1e12", modify: func(s *sluicev1.JobSpec) { s.Limits.InitialRate = 1 << 62 }, wantField: "limits.initial_rate"},
		{name: "negative max records per task", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxRecordsPerTask = -1 }, wantField: "limits.max_records_per_task"},
		{name: "output bytes over 48 MiB", modify: func(s *sluicev1.JobSpec) { s.Limits.MaxTaskOutputBytes = 49 << 20 }, wantField: "limits.max_task_output_bytes", wantInError: []string{"50331648"}},
		{name: "speculation multiplier below 1", modify: func(s *sluicev1.JobSpec) { s.Limits.SpeculationMultiplier = 0.5 }, wantField: "limits.speculation_multiplier", wantInError: []string{"turn speculation off"}},
		{name: "speculation multiplier NaN", modify: func(s *sluicev1.JobSpec) { s.Limits.SpeculationMultiplier = math.NaN() }, wantField: "limits.speculation_multiplier"},
		{name: "negative PID gain", modify: func(s *sluicev1.JobSpec) { s.Limits.Backpressure = &sluicev1.Backpressure{Integral: proto.Float64(-1)} }, wantField: "limits.backpressure.integral"},
		{name: "huge PID gain", modify: func(s *sluicev1.JobSpec) {
			s.Limits.Backpressure = &sluicev1.Backpressure{Proportional: proto.Float64(1e9)}
		}, wantField: "limits.backpressure.proportional"},
		{name: "infinite PID gain", modify: func(s *sluicev1.JobSpec) {
			s.Limits.Backpressure = &sluicev1.Backpressure{Derivative: proto.Float64(math.Inf(1))}
		}, wantField: "limits.backpressure.derivative"},
		{name: "negative PID min rate", modify: func(s *sluicev1.JobSpec) { s.Limits.Backpressure = &sluicev1.Backpressure{MinRate: -1} }, wantField: "limits.backpressure.min_rate"},
		{name: "unknown placement mode", modify: func(s *sluicev1.JobSpec) { s.Placement = &sluicev1.Placement{Mode: 9} }, wantField: "placement.mode"},
		{name: "fixed placement without entries", modify: func(s *sluicev1.JobSpec) {
			s.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED}
		}, wantField: "placement.fixed"},
		{name: "fixed entries without fixed mode", modify: func(s *sluicev1.JobSpec) {
			s.Placement = &sluicev1.Placement{Fixed: []*sluicev1.FixedPlacement{{Topic: "clicks", WorkerLabel: "a"}}}
		}, wantField: "placement.fixed"},
		{name: "fixed placement of an unknown topic", modify: func(s *sluicev1.JobSpec) {
			s.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED, Fixed: []*sluicev1.FixedPlacement{{Topic: "nope", WorkerLabel: "a"}}}
		}, wantField: "placement.fixed[0].topic"},
		{name: "fixed placement with a bad label", modify: func(s *sluicev1.JobSpec) {
			s.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED, Fixed: []*sluicev1.FixedPlacement{{Topic: "clicks", WorkerLabel: "a b"}}}
		}, wantField: "placement.fixed[0].worker_label"},
		{name: "fixed placement of a partition twice", modify: func(s *sluicev1.JobSpec) {
			s.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED, Fixed: []*sluicev1.FixedPlacement{
				{Topic: "clicks", Partitions: []int32{1, 2}, WorkerLabel: "a"}, {Topic: "clicks", Partitions: []int32{2}, WorkerLabel: "b"},
			}}
		}, wantField: "placement.fixed[1].partitions", wantInError: []string{"clicks/2"}},
		{name: "fixed placement of a negative partition", modify: func(s *sluicev1.JobSpec) {
			s.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED, Fixed: []*sluicev1.FixedPlacement{{Topic: "clicks", Partitions: []int32{-1}, WorkerLabel: "a"}}}
		}, wantField: "placement.fixed[0].partitions"},
		{name: "fixed placement of a topic twice", modify: func(s *sluicev1.JobSpec) {
			s.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED, Fixed: []*sluicev1.FixedPlacement{
				{Topic: "clicks", WorkerLabel: "a"}, {Topic: "clicks", WorkerLabel: "b"},
			}}
		}, wantField: "placement.fixed[1]"},
		{
			name: "runaway CEL loop",
			modify: func(s *sluicev1.JobSpec) {
				setFilters(s, `lists.range(100000).all(i, lists.range(100000).all(j, j >= 0))`)
			},
			wantField:   "steps[0].filter",
			wantInError: []string{"above the limit of 1000000 for one record"},
		},
		{
			name: "runaway CEL loop in the aggregate key",
			modify: func(s *sluicev1.JobSpec) {
				s.Aggregate.Key = `string(lists.range(5000).map(i, lists.range(5000).filter(j, j < i).size()).size())`
			},
			wantField:   "aggregate.key",
			wantInError: []string{"above the limit"},
		},
		{
			name:        "modulo of a double",
			modify:      func(s *sluicev1.JobSpec) { setFilters(s, `double(size(value)) % 2 == 0.0`) },
			wantField:   "steps[0].filter",
			wantInError: []string{"% is defined on ints, not doubles"},
		},
		{name: "unknown record error policy", modify: func(s *sluicev1.JobSpec) { s.OnRecordError = 9 }, wantField: "on_record_error"},
		{name: "sink without a kind", modify: func(s *sluicev1.JobSpec) { s.Sink = &sluicev1.Sink{} }, wantField: "sink"},
		{
			name:      "starting position unspecified",
			modify:    func(s *sluicev1.JobSpec) { setStartPosition(s, sluicev1.StartPosition_START_POSITION_UNSPECIFIED) },
			wantField: "source.starting_offsets.position",
		},
		{
			name:      "starting position unknown",
			modify:    func(s *sluicev1.JobSpec) { setStartPosition(s, 5) },
			wantField: "source.starting_offsets.position",
		},
		{
			name: "explicit offset for a topic not in topics",
			modify: func(s *sluicev1.JobSpec) {
				setExplicitOffsets(s, &sluicev1.PartitionOffset{Topic: "clicks"}, &sluicev1.PartitionOffset{Topic: "views", Partition: 0, Offset: 1})
			},
			wantField:   "source.starting_offsets.explicit.offsets[1].topic",
			wantInError: []string{`"views"`},
		},
		{
			name: "explicit offset with a negative partition",
			modify: func(s *sluicev1.JobSpec) {
				setExplicitOffsets(s, &sluicev1.PartitionOffset{Topic: "clicks", Partition: -1})
			},
			wantField: "source.starting_offsets.explicit.offsets[0].partition",
		},
		{
			name: "negative explicit offset",
			modify: func(s *sluicev1.JobSpec) {
				setExplicitOffsets(s, &sluicev1.PartitionOffset{Topic: "clicks", Partition: 0, Offset: 3}, &sluicev1.PartitionOffset{Topic: "clicks", Partition: 1, Offset: -2})
			},
			wantField: "source.starting_offsets.explicit.offsets[1].offset",
		},
		{
			name: "duplicate explicit partition",
			modify: func(s *sluicev1.JobSpec) {
				setExplicitOffsets(s,
					&sluicev1.PartitionOffset{Topic: "clicks", Partition: 2, Offset: 3},
					&sluicev1.PartitionOffset{Topic: "orders.v1", Partition: 2, Offset: 3},
					&sluicev1.PartitionOffset{Topic: "clicks", Partition: 2, Offset: 4})
			},
			wantField:   "source.starting_offsets.explicit.offsets[2]",
			wantInError: []string{"clicks/2", "twice"},
		},
		{
			name:        "CEL syntax error",
			modify:      func(s *sluicev1.JobSpec) { setFilters(s, `true`, `value ==`) },
			wantField:   "steps[1].filter",
			wantInError: []string{"<input>:1:9:", "Syntax error", "| value =="},
		},
		{
			name:        "CEL undeclared variable",
			modify:      func(s *sluicev1.JobSpec) { setFilters(s, `valu == "x"`) },
			wantField:   "steps[0].filter",
			wantInError: []string{"<input>:1:1:", "valu", `| valu == "x"`},
		},
		{
			name:        "filter that is not boolean",
			modify:      func(s *sluicev1.JobSpec) { setFilters(s, `true`, `value + "x"`) },
			wantField:   "steps[1].filter",
			wantInError: []string{"<input>:1:7:", `| value + "x"`, "want a bool"},
		},
		{
			name:      "empty filter",
			modify:    func(s *sluicev1.JobSpec) { setFilters(s, ` `) },
			wantField: "steps[0].filter",
		},
		{
			name:      "step without a kind",
			modify:    func(s *sluicev1.JobSpec) { s.Steps = append(s.Steps, &sluicev1.Step{}) },
			wantField: "steps[3]",
		},
		{
			name: "map without key or value",
			modify: func(s *sluicev1.JobSpec) {
				s.Steps[1] = &sluicev1.Step{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{}}}
			},
			wantField: "steps[1].map",
		},
		{
			name: "aggregate SUM without value",
			modify: func(s *sluicev1.JobSpec) {
				s.Aggregate = &sluicev1.Aggregate{Functions: []sluicev1.AggregateFunction{sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM}}
			},
			wantField:   "aggregate.value",
			wantInError: []string{"SUM"},
		},
		{
			name: "aggregate function unspecified",
			modify: func(s *sluicev1.JobSpec) {
				s.Aggregate.Functions = []sluicev1.AggregateFunction{sluicev1.AggregateFunction_AGGREGATE_FUNCTION_UNSPECIFIED}
			},
			wantField: "aggregate.functions[0]",
		},
		{
			name:      "aggregate value that is not numeric",
			modify:    func(s *sluicev1.JobSpec) { s.Aggregate.Value = `value` },
			wantField: "aggregate.value",
		},
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

func TestValidateFieldNamedOnce(t *testing.T) {
	s := validJobSpec()
	setFilters(s, `true`, `value ==`)
	err := Validate(s)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate(steps[1].filter %q) = %v, want a *ValidationError", "value ==", err)
	}
	if strings.HasPrefix(ve.Reason, ve.Field) {
		t.Errorf("Validate(steps[1].filter %q).Reason = %q, want it not to repeat the field %q", "value ==", ve.Reason, ve.Field)
	}
	if n := strings.Count(err.Error(), "steps[1].filter"); n != 1 {
		t.Errorf("Validate(steps[1].filter %q) = %q names the field %d times, want once", "value ==", err, n)
	}
}

func TestValidateNil(t *testing.T) {
	err := Validate(nil)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "spec" {
		t.Errorf("Validate(nil) = %v, want a *ValidationError for spec", err)
	}
}

func TestToStatus(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
		// wantMsg is a substring of the status message.
		wantMsg string
		// wantField is the BadRequest field violation, if any.
		wantField string
	}{
		{
			name:      "validation error",
			err:       &ValidationError{Field: "source.topics[1]", Reason: "bad"},
			wantCode:  codes.InvalidArgument,
			wantMsg:   "invalid job spec: source.topics[1]: bad",
			wantField: "source.topics[1]",
		},
		{
			name: "runaway expression",
			err: Validate(func() *sluicev1.JobSpec {
				s := validJobSpec()
				setFilters(s, `lists.range(100000).all(i, lists.range(100000).all(j, j >= 0))`)
				return s
			}()),
			wantCode:  codes.InvalidArgument,
			wantMsg:   "invalid job spec: steps[0].filter: ",
			wantField: "steps[0].filter",
		},
		{
			name:     "property refused by the kafka policy",
			err:      fmt.Errorf("admin for k:9092: %w", kafkasrc.Policy{}.CheckProperties(map[string]string{"plugin.library.paths": "x.so"})),
			wantCode: codes.InvalidArgument,
			wantMsg:  `"plugin.library.paths"`,
		},
		{
			name:      "wrapped validation error",
			err:       fmt.Errorf("submit: %w", &ValidationError{Field: "steps[0].filter", Reason: "bad"}),
			wantCode:  codes.InvalidArgument,
			wantMsg:   "invalid job spec: steps[0].filter: bad",
			wantField: "steps[0].filter",
		},
		{name: "not found", err: fmt.Errorf("job %q: %w", "x", offsetstore.ErrNotFound), wantCode: codes.NotFound, wantMsg: `job "x": offsetstore: not found`},
		{name: "exists", err: fmt.Errorf("job %q: %w", "x", offsetstore.ErrExists), wantCode: codes.AlreadyExists, wantMsg: `job "x": offsetstore: already exists`},
		{name: "conflict", err: offsetstore.ErrConflict, wantCode: codes.Aborted, wantMsg: offsetstore.ErrConflict.Error()},
		{name: "canceled", err: fmt.Errorf("list: %w", context.Canceled), wantCode: codes.Canceled, wantMsg: "list: context canceled"},
		{name: "deadline exceeded", err: context.DeadlineExceeded, wantCode: codes.DeadlineExceeded, wantMsg: "deadline"},
		{name: "not leader", err: ErrNotLeader, wantCode: codes.FailedPrecondition, wantMsg: "not leader"},
		{name: "status error passes through", err: status.Error(codes.Unavailable, "down"), wantCode: codes.Unavailable, wantMsg: "down"},
		{name: "unknown", err: errors.New("boom"), wantCode: codes.Internal, wantMsg: "boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := toStatus(tc.err)
			st, ok := status.FromError(got)
			if !ok {
				t.Fatalf("toStatus(%v) = %v, want a gRPC status error", tc.err, got)
			}
			if st.Code() != tc.wantCode {
				t.Errorf("toStatus(%v) code = %v, want %v", tc.err, st.Code(), tc.wantCode)
			}
			if !strings.Contains(st.Message(), tc.wantMsg) {
				t.Errorf("toStatus(%v) message = %q, want it to contain %q", tc.err, st.Message(), tc.wantMsg)
			}
			var fields []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			switch {
			case tc.wantField == "" && len(fields) > 0:
				t.Errorf("toStatus(%v) field violations = %q, want none", tc.err, fields)
			case tc.wantField != "" && (len(fields) != 1 || fields[0] != tc.wantField):
				t.Errorf("toStatus(%v) field violations = %q, want [%q]", tc.err, fields, tc.wantField)
			}
		})
	}
}

func TestToStatusNilAndStatus(t *testing.T) {
	if got := toStatus(nil); got != nil {
		t.Errorf("toStatus(nil) = %v, want nil", got)
	}
	in := status.Error(codes.ResourceExhausted, "slow down")
	if got := toStatus(in); got != in {
		t.Errorf("toStatus(%v) = %v, want the same status error", in, got)
	}
}

// Specs above the bounds of jobspec/limits.go are refused naming the field
// and the bound.
func TestValidateSizes(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name        string
		modify      func(s *sluicev1.JobSpec)
		wantField   string
		wantInError []string
	}{
		{"spec too large", func(s *sluicev1.JobSpec) {
			for i := range 5 {
				s.Source.Properties[fmt.Sprintf("ssl.ca.pem%d", i)] = long(60 << 10)
			}
		}, "spec", []string{"at most 262144"}},
		{"too many steps", func(s *sluicev1.JobSpec) {
			setFilters(s, slicesRepeat("true", 65)...)
		}, "steps", []string{"65 steps: at most 64"}},
		{"filter too long", func(s *sluicev1.JobSpec) { setFilters(s, "true", `"`+long(20000)+`" != ""`) },
			"steps[1].filter", []string{"at most 16384"}},
		{"map value too long", func(s *sluicev1.JobSpec) {
			s.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{Value: `"` + long(17000) + `"`}}}}
		}, "steps[0].map.value", []string{"at most 16384"}},
		{"aggregate key too long", func(s *sluicev1.JobSpec) { s.Aggregate.Key = `"` + long(17000) + `"` },
			"aggregate.key", []string{"at most 16384"}},
		{"too many properties", func(s *sluicev1.JobSpec) {
			for i := range 65 {
				s.Source.Properties[fmt.Sprintf("p%d", i)] = "1"
			}
		}, "source.properties", []string{"entries: at most 64"}},
		{"property value too long", func(s *sluicev1.JobSpec) { s.Source.Properties["ssl.ca.pem"] = long(70 << 10) },
			"source.properties", []string{`"ssl.ca.pem"`, "at most 65536"}},
		{"sink header expression too long", func(s *sluicev1.JobSpec) {
			s.Aggregate = nil
			s.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: "out", Headers: map[string]string{"h": long(17000)}}}}
		}, `sink.kafka.headers["h"]`, []string{"at most 16384"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := validJobSpec()
			tc.modify(s)
			err := Validate(s)
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.wantField {
				t.Fatalf("Validate = %v, want a *ValidationError for %s", err, tc.wantField)
			}
			for _, sub := range tc.wantInError {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("Validate = %q, want it to contain %q", err, sub)
				}
			}
		})
	}
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// CheckPolicy names the field and the property that the operator's policy
// refuses, in the source and in the Kafka sink.
func TestCheckPolicy(t *testing.T) {
	kafkaSink := func(s *sluicev1.JobSpec, k *sluicev1.KafkaSink) {
		s.Aggregate = nil
		s.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: k}}
	}
	tests := []struct {
		name        string
		policy      kafkasrc.Policy
		modify      func(s *sluicev1.JobSpec)
		wantField   string // "" = allowed
		wantInError []string
	}{
		{name: "valid spec", modify: func(*sluicev1.JobSpec) {}},
		{name: "code in the source", modify: func(s *sluicev1.JobSpec) { s.Source.Properties["plugin.library.paths"] = "/nonexistent.so" },
			wantField: "source.properties", wantInError: []string{`"plugin.library.paths"`, "--allow-kafka-property"}},
		{name: "allowed by the operator", policy: kafkasrc.Policy{Allow: []string{"plugin.library.paths"}},
			modify: func(s *sluicev1.JobSpec) { s.Source.Properties["plugin.library.paths"] = "/opt/p.so" }},
		{name: "command in the sink", modify: func(s *sluicev1.JobSpec) {
			kafkaSink(s, &sluicev1.KafkaSink{Topic: "out", Properties: map[string]string{"sasl.kerberos.kinit.cmd": "id"}})
		}, wantField: "sink.kafka.properties", wantInError: []string{`"sasl.kerberos.kinit.cmd"`}},
		{name: "typo", modify: func(s *sluicev1.JobSpec) { s.Source.Properties["fetch.max.byte"] = "1" },
			wantField: "source.properties", wantInError: []string{`"fetch.max.byte"`}},
		{name: "source bootstrap not allowed", policy: kafkasrc.Policy{Bootstrap: []string{"localhost:9092"}},
			modify: func(*sluicev1.JobSpec) {}, wantField: "source.bootstrap_servers", wantInError: []string{`"localhost:9093"`}},
		{name: "sink bootstrap not allowed", policy: kafkasrc.Policy{Bootstrap: []string{"localhost:9092", "localhost:9093"}},
			modify: func(s *sluicev1.JobSpec) {
				kafkaSink(s, &sluicev1.KafkaSink{Topic: "out", BootstrapServers: "elsewhere:9092"})
			}, wantField: "sink.kafka.bootstrap_servers", wantInError: []string{`"elsewhere:9092"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := validJobSpec()
			tc.modify(s)
			err := CheckPolicy(s, tc.policy)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("CheckPolicy = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.wantField {
				t.Fatalf("CheckPolicy = %v, want a *ValidationError for %s", err, tc.wantField)
			}
			if st := status.Convert(toStatus(err)); st.Code() != codes.InvalidArgument {
				t.Errorf("code %s, want InvalidArgument", st.Code())
			}
			for _, sub := range tc.wantInError {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("CheckPolicy = %q, want it to contain %q", err, sub)
				}
			}
		})
	}
}
