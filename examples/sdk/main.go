// Command sdk submits a job with the Go SDK and prints its batches as they
// commit, then the per-page totals.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func main() {
	coordinator := flag.String("coordinator", "127.0.0.1:7070", "coordinator address")
	bootstrap := flag.String("bootstrap", "127.0.0.1:19092", "Kafka bootstrap servers")
	records := flag.Int64("records", 1000, "stop after this many records were committed")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	c, err := client.Dial([]string{*coordinator})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	spec := &sluicev1.JobSpec{
		Name: "pageviews-sdk",
		Source: &sluicev1.KafkaSource{
			BootstrapServers: *bootstrap,
			Topics:           []string{"pageviews"},
			StartingOffsets: &sluicev1.StartingOffsets{
				Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST},
			},
		},
		BatchInterval: durationpb.New(500 * time.Millisecond),
		Steps:         []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "json.ms < 1000"}}},
		Aggregate:     &sluicev1.Aggregate{Key: "json.page"},
	}
	if _, err := c.Submit(ctx, spec); err != nil {
		log.Fatal(err) // codes.InvalidArgument names the bad field
	}

	var seen int64
	err = c.Watch(ctx, spec.Name, 0, true, func(m *sluicev1.WatchBatchesResponse) error {
		b := m.GetBatch()
		seen += b.GetMetrics().GetRecordsIn()
		fmt.Printf("batch %d: %d records in %d ranges\n", b.GetId(), b.GetMetrics().GetRecordsIn(), len(b.GetRanges()))
		if seen >= *records {
			cancel() // enough: stop watching
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	res, err := c.Results(context.Background(), spec.Name, 0, 0, true)
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range res.GetMerged() {
		fmt.Printf("%s %d\n", a.GetKey(), a.GetCount())
	}
}
