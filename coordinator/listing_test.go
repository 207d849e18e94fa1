package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestListAhead: the listing of a late batch's successor is asked no
// earlier than the successor's batch time, for every partition the
// batch's commit makes known (a partition it reads first included); one
// not yet due is abandoned at once; a failed one is not used.
func TestListAhead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kafka broker")
	}
	brokers, kc := StartKafka(t, 3, "t")
	var recs []*kgo.Record
	for p := range int32(3) {
		for range 5 + p {
			recs = append(recs, &kgo.Record{Topic: "t", Partition: p, Value: []byte("v")})
		}
	}
	if err := kc.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	admins := kafkasrc.NewAdminPool(hclog.NewNullLogger())
	defer admins.Close()
	const interval = 300 * time.Millisecond
	runner := func(topics ...string) *jobRunner {
		return &jobRunner{
			spec: &sluicev1.JobSpec{
				Source:        &sluicev1.KafkaSource{BootstrapServers: brokers, Topics: topics},
				BatchInterval: durationpb.New(interval),
			},
			admins: admins, logger: hclog.NewNullLogger(), now: time.Now,
		}
	}
	ctx := context.Background()
	// Batch 1 read partition 0 (known before) and partition 1 (new).
	offs := &sluicev1.CommittedOffsets{BatchId: 0, Offsets: []*sluicev1.PartitionOffset{{Topic: "t", Partition: 0, Offset: 0}}}
	b := &sluicev1.Batch{Id: 1, Ranges: []*sluicev1.OffsetRange{
		{Topic: "t", Partition: 0, FromOffset: 0, UntilOffset: 5},
		{Topic: "t", Partition: 1, FromOffset: 0, UntilOffset: 6},
	}}
	bt := time.Now()
	l := runner("t").listAhead(ctx, bt, b, offs).wait()
	if l == nil {
		t.Fatal("the listing failed")
	}
	if due := bt.Add(interval); l.tpsAt.Before(due) {
		t.Errorf("listed at %s, %s before the next batch time", l.tpsAt.Format(time.StampMilli), due.Sub(l.tpsAt))
	}
	if len(l.tps) != 3 {
		t.Errorf("partitions listed: %v, want the topic's 3", l.tps)
	}
	for p, want := range map[int32]int64{0: 5, 1: 6} {
		if got, ok := l.latest[kafkasrc.TopicPartition{Topic: "t", Partition: p}]; !ok || got != want {
			t.Errorf("latest offset of t/%d: %d (asked %v), want %d", p, got, ok, want)
		}
	}
	if _, ok := l.latest[kafkasrc.TopicPartition{Topic: "t", Partition: 2}]; ok {
		t.Errorf("t/2, which no batch read, was asked: planning asks for new partitions itself")
	}

	// Not due for an hour: stop returns at once.
	a := runner("t").listAhead(ctx, time.Now().Add(time.Hour), b, offs)
	stopped := make(chan struct{})
	go func() {
		a.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop waited for the batch time")
	}

	// A topic gone: the listing fails and is not used.
	gone := &sluicev1.Batch{Id: 1, Ranges: []*sluicev1.OffsetRange{{Topic: "gone", Partition: 0, UntilOffset: 1}}}
	if l := runner("gone").listAhead(ctx, time.Now().Add(-interval), gone, &sluicev1.CommittedOffsets{}).wait(); l != nil {
		t.Errorf("a failed listing was used: %+v", l)
	}
}

// TestNextListing: the listing asked ahead is used once done; while it
// runs, a job whose last batch a cap cut plans with its last plan's
// offsets (marked reused, the listing kept running), and any other job
// waits for it.
func TestNextListing(t *testing.T) {
	tp := kafkasrc.TopicPartition{Topic: "t", Partition: 0}
	last := &listing{earliest: map[kafkasrc.TopicPartition]int64{tp: 0}, latest: map[kafkasrc.TopicPartition]int64{tp: 100}}
	running := func() *listingAhead {
		return &listingAhead{cancel: func() {}, done: make(chan struct{})}
	}
	finished := func(latest int64) *listingAhead {
		a := running()
		a.l = listing{earliest: map[kafkasrc.TopicPartition]int64{tp: 0}, latest: map[kafkasrc.TopicPartition]int64{tp: latest}}
		close(a.done)
		return a
	}

	r := &jobRunner{lastListing: last, lastLimited: true}
	if l, kept := r.nextListing(finished(200)); kept || l == nil || l.latest[tp] != 200 || l.reused {
		t.Errorf("done ahead: got %+v, kept %v; want its own listing (latest 200), not kept", l, kept)
	}
	a := running()
	l, kept := r.nextListing(a)
	if !kept || l == nil || l.latest[tp] != 100 || !l.reused {
		t.Errorf("running ahead, last batch capped: got %+v, kept %v; want the last listing reused (latest 100) and the running one kept", l, kept)
	}
	if l == last {
		t.Error("the last listing itself was handed out: planning marks it reused")
	}
	if l, kept := (&jobRunner{}).nextListing(nil); kept || l != nil {
		t.Errorf("nothing ahead: got %+v, kept %v; want nil (planning lists itself)", l, kept)
	}

	// Not capped: the newest offsets decide the ranges, so planning waits.
	r = &jobRunner{lastListing: last, lastLimited: false}
	a = running()
	time.AfterFunc(50*time.Millisecond, func() {
		a.l = listing{latest: map[kafkasrc.TopicPartition]int64{tp: 300}}
		close(a.done)
	})
	start := time.Now()
	if l, kept := r.nextListing(a); kept || l == nil || l.latest[tp] != 300 {
		t.Errorf("running ahead, last batch not capped: got %+v, kept %v; want to wait for it (latest 300)", l, kept)
	}
	if waited := time.Since(start); waited < 40*time.Millisecond {
		t.Errorf("returned after %s: did not wait for the running listing", waited)
	}
	// Nothing planned yet (a new runner, after a recovery): wait too.
	r = &jobRunner{lastLimited: true}
	if l, kept := r.nextListing(finished(400)); kept || l == nil || l.latest[tp] != 400 {
		t.Errorf("no last listing: got %+v, kept %v; want the one ahead", l, kept)
	}
}
