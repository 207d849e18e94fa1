package kafkasrc_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/record"
)

// Example plans a range from the latest offset, as the coordinator does, and
// reads it through a worker's consumer cache.
func Example() {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"))
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	cluster := kafkasrc.Cluster{Bootstrap: strings.Join(broker.ListenAddrs(), ",")}
	logger := hclog.NewNullLogger()
	ctx := context.Background()

	p, err := kafkasrc.NewProducer(cluster, nil, logger)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	for i := range 3 {
		if err := p.Produce(ctx, "events", 0, fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i)); err != nil {
			panic(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		panic(err)
	}

	admins := kafkasrc.NewAdminPool(logger)
	defer admins.Close()
	admin, err := admins.Get(cluster)
	if err != nil {
		panic(err)
	}
	tp := kafkasrc.TopicPartition{Topic: "events", Partition: 0}
	latest, err := admin.LatestOffsets(ctx, []kafkasrc.TopicPartition{tp})
	if err != nil {
		panic(err)
	}

	cache := kafkasrc.NewCache(16, logger)
	defer cache.Close()
	r := kafkasrc.Range{Topic: "events", Partition: 0, From: 0, Until: latest[tp]}
	stats, err := cache.Read(ctx, cluster, "sluice-example", r, func(rec *record.Record) error {
		// rec, rec.Key and rec.Value are valid only during this call.
		fmt.Printf("%d %s=%s\n", rec.Offset, rec.Key, rec.Value)
		return nil
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("records:", stats.Records)
	// Output:
	// 0 k0=v0
	// 1 k1=v1
	// 2 k2=v2
	// records: 3
}
