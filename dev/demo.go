package dev

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// DemoConfig configures the demo stream and job.
type DemoConfig struct {
	Enabled    bool
	Topic      string
	Partitions int32
	// Rate is how many click events per second the demo produces.
	Rate     int
	Interval time.Duration
}

// DefaultDemoConfig returns the demo's defaults.
func DefaultDemoConfig() DemoConfig {
	return DemoConfig{Topic: "clicks", Partitions: 8, Rate: 20000, Interval: time.Second}
}

// DemoJob is the job the demo submits: page views per page, with the average
// latency, of the clicks that did not error.
func DemoJob(bootstrap, topic string, interval time.Duration) *sluicev1.JobSpec {
	return &sluicev1.JobSpec{
		Name: "demo-clicks",
		Source: &sluicev1.KafkaSource{
			BootstrapServers: bootstrap,
			Topics:           []string{topic},
			StartingOffsets:  &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}},
		},
		BatchInterval: durationpb.New(interval),
		Steps:         []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "json.status < 500"}}},
		Aggregate: &sluicev1.Aggregate{
			Key:   "json.page",
			Value: "json.ms",
			Functions: []sluicev1.AggregateFunction{
				sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT,
				sluicev1.AggregateFunction_AGGREGATE_FUNCTION_AVG,
			},
		},
		Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Collect{Collect: &sluicev1.CollectSink{}}},
		// A restart after a long pause catches up in bounded batches.
		Limits: &sluicev1.Limits{MaxRecordsPerBatch: 100000},
	}
}

var demoPages = []string{"/", "/search", "/product", "/cart", "/checkout", "/account", "/help", "/blog"}

// runDemo creates the topic, produces a synthetic click stream, submits the
// demo job (a job that exists already just resumes) and prints every batch.
func runDemo(ctx context.Context, cfg Config, bootstrap string, dial ...grpc.DialOption) error {
	d := cfg.Demo
	cl := kafkasrc.Cluster{Bootstrap: bootstrap}
	admin, err := kafkasrc.NewAdmin(cl, cfg.Logger.Named("demo"))
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := admin.CreateTopic(ctx, d.Topic, d.Partitions); err != nil {
		return fmt.Errorf("demo: create topic %s: %w", d.Topic, err)
	}

	c, err := client.Dial([]string{cfg.GRPCAddr}, dial...)
	if err != nil {
		return err
	}
	defer c.Close()
	spec := DemoJob(bootstrap, d.Topic, d.Interval)
	if _, err := c.Submit(ctx, spec); err != nil {
		if status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("demo: submit: %w", err)
		}
		fmt.Fprintf(cfg.Out, "job %s exists: resuming from its committed offsets\n", spec.GetName())
	} else {
		fmt.Fprintf(cfg.Out, "submitted job %s: filter json.status < 500, count and avg(json.ms) by json.page, every %s\n", spec.GetName(), d.Interval)
	}
	fmt.Fprintf(cfg.Out, "producing %d click events/s to topic %s (%d partitions); Ctrl-C stops\n\n", d.Rate, d.Topic, d.Partitions)

	errc := make(chan error, 1)
	go func() { errc <- produceClicks(ctx, cl, d, cfg) }()
	werr := c.Watch(ctx, spec.GetName(), 0, true, func(m *sluicev1.WatchBatchesResponse) error {
		fmt.Fprintln(cfg.Out, FormatBatch(m.GetBatch(), m.GetResult()))
		return nil
	})
	perr := <-errc
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(werr, perr)
}

// produceClicks writes JSON click events at the configured rate until ctx ends.
func produceClicks(ctx context.Context, cl kafkasrc.Cluster, d DemoConfig, cfg Config) error {
	p, err := kafkasrc.NewProducer(cl, map[string]string{"linger.ms": "5"}, cfg.Logger.Named("demo"))
	if err != nil {
		return err
	}
	defer p.Close()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	const tick = 50 * time.Millisecond
	perTick := max(d.Rate/int(time.Second/tick), 1)
	t := time.NewTicker(tick)
	defer t.Stop()
	buf := make([]byte, 0, 256)
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return p.Flush(fctx)
		case <-t.C:
		}
		for range perTick {
			user := "u" + strconv.Itoa(rng.IntN(5000))
			page := demoPages[rng.IntN(len(demoPages))]
			st := 200
			if rng.IntN(50) == 0 {
				st = 503
			}
			buf = buf[:0]
			buf = fmt.Appendf(buf, `{"user":%q,"page":%q,"status":%d,"ms":%d,"ts":%d}`,
				user, page, st, 5+rng.IntN(400), time.Now().UnixMilli())
			if err := p.Produce(ctx, d.Topic, -1, []byte(user), append([]byte(nil), buf...)); err != nil {
				if ctx.Err() != nil {
					continue
				}
				return fmt.Errorf("demo: produce: %w", err)
			}
		}
	}
}

// FormatBatch renders a committed batch as one line.
func FormatBatch(b *sluicev1.Batch, r *sluicev1.BatchResult) string {
	m := b.GetMetrics()
	var sb strings.Builder
	fmt.Fprintf(&sb, "batch %-5d %s  in %-7d out %-7d processing %-6s sched %-6s total %-6s ranges %d",
		b.GetId(), b.GetBatchTime().AsTime().Local().Format("15:04:05.000"),
		m.GetRecordsIn(), m.GetRecordsOut(),
		m.GetProcessingTime().AsDuration().Round(time.Millisecond),
		m.GetSchedulingDelay().AsDuration().Round(time.Millisecond),
		m.GetTotalDelay().AsDuration().Round(time.Millisecond), len(b.GetRanges()))
	fmt.Fprintf(&sb, "  cap %s", FormatCap(b.GetCap()))
	if m.GetRecordsFailed() > 0 {
		fmt.Fprintf(&sb, "  failed %d", m.GetRecordsFailed())
	}
	if m.GetRecordsDeadLettered() > 0 {
		fmt.Fprintf(&sb, "  dead-lettered %d", m.GetRecordsDeadLettered())
	}
	aggs := append([]*sluicev1.KeyAggregate(nil), r.GetAggregates()...)
	sort.SliceStable(aggs, func(i, j int) bool { return aggs[i].GetCount() > aggs[j].GetCount() })
	if len(aggs) > 0 {
		sb.WriteString("  top")
		for _, a := range aggs[:min(3, len(aggs))] {
			fmt.Fprintf(&sb, " %s=%d(avg %.0fms)", a.GetKey(), a.GetCount(), a.GetAvg())
		}
	}
	return sb.String()
}

// FormatCap says which limit sized a batch: "estimate 712345/s, 712345
// records (limited)" is a batch cut by backpressure; "none" took every
// available record.
func FormatCap(c *sluicev1.BatchCap) string {
	if c == nil || c.GetSource() == sluicev1.CapSource_CAP_SOURCE_UNSPECIFIED {
		return "-"
	}
	name := strings.ToLower(strings.TrimPrefix(c.GetSource().String(), "CAP_SOURCE_"))
	if c.GetSource() == sluicev1.CapSource_CAP_SOURCE_NONE {
		return name
	}
	var sb strings.Builder
	sb.WriteString(strings.ReplaceAll(name, "_", "-"))
	if c.GetRate() > 0 {
		fmt.Fprintf(&sb, " %d/s", c.GetRate())
	}
	if c.GetMaxRecords() > 0 {
		fmt.Fprintf(&sb, ", %d records", c.GetMaxRecords())
	}
	if c.GetLimited() {
		sb.WriteString(" (limited)")
	}
	return sb.String()
}
