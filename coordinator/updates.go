package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
	"github.com/sluice-stream/sluice/steps"
)

// The update stream (a Kafka sink after aggregate.running or
// aggregate.window) is written by the leader after each batch's etcd
// commit, from the batch's stored result: its changed totals and emitted
// windows. Each batch's updates go in one Kafka transaction that also
// commits the batch id as the offset of partition 0 of the sink topic in
// the group jobspec.UpdatesGroupID, so a batch already in Kafka is skipped.
// A runner commits no batch before the last one's updates are in Kafka
// (it writes them first when it starts), so only the last committed batch
// can be pending: a crash between the etcd commit and the Kafka commit is
// made good by the next leader, and the transactional id fences a
// deposed leader's open transaction. Each update is written exactly once.

// changedTotals returns the totals (sorted by key) of the keys in aggs.
func changedTotals(totals, aggs []*sluicev1.KeyAggregate) []*sluicev1.KeyAggregate {
	out := make([]*sluicev1.KeyAggregate, 0, len(aggs))
	for _, a := range aggs {
		k := steps.ExactKey(a)
		if i, ok := slices.BinarySearchFunc(totals, k, func(t *sluicev1.KeyAggregate, k string) int { return strings.Compare(steps.ExactKey(t), k) }); ok {
			out = append(out, totals[i])
		}
	}
	return out
}

// updateValue is the JSON value of one update.
type updateValue struct {
	// Window is set for an emitted window, absent for a running total.
	Window *updateWindow `json:"window,omitempty"`
	Count  int64         `json:"count"`
	Sum    *float64      `json:"sum,omitempty"`
	Min    *float64      `json:"min,omitempty"`
	Max    *float64      `json:"max,omitempty"`
	Avg    *float64      `json:"avg,omitempty"`
}

type updateWindow struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// updateMessages are a batch's updates: its changed totals, then its
// emitted windows, each key with its aggregates as JSON; only the
// functions the job asks for are in the JSON, count always.
func updateMessages(spec *sluicev1.JobSpec, batchID int64, res *sluicev1.BatchResult) ([]kafkasrc.Message, error) {
	fns := map[sluicev1.AggregateFunction]bool{}
	for _, f := range spec.GetAggregate().GetFunctions() {
		fns[f] = true
	}
	topic := spec.GetSink().GetKafka().GetTopic()
	hdrs := []record.Header{
		{Key: "sluice-job", Value: []byte(spec.GetName())},
		{Key: "sluice-batch", Value: []byte(strconv.FormatInt(batchID, 10))},
	}
	var msgs []kafkasrc.Message
	add := func(a *sluicev1.KeyAggregate, w *sluicev1.WindowResult) error {
		v := updateValue{Count: a.GetCount()}
		set := func(f sluicev1.AggregateFunction, x float64) *float64 {
			if !fns[f] {
				return nil
			}
			return &x
		}
		v.Sum = set(sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM, a.GetSum())
		v.Min = set(sluicev1.AggregateFunction_AGGREGATE_FUNCTION_MIN, a.GetMin())
		v.Max = set(sluicev1.AggregateFunction_AGGREGATE_FUNCTION_MAX, a.GetMax())
		v.Avg = set(sluicev1.AggregateFunction_AGGREGATE_FUNCTION_AVG, a.GetAvg())
		if w != nil {
			v.Window = &updateWindow{Start: w.GetStart().AsTime().UTC(), End: w.GetEnd().AsTime().UTC()}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("update of key %q: %w", a.GetKey(), err) // NaN or Inf
		}
		msgs = append(msgs, kafkasrc.Message{Topic: topic, Partition: -1, Key: []byte(steps.ExactKey(a)), Value: b, Headers: hdrs})
		return nil
	}
	for _, a := range res.GetTotals() {
		if err := add(a, nil); err != nil {
			return nil, err
		}
	}
	for _, w := range res.GetWindows() {
		for _, a := range w.GetAggregates() {
			if err := add(a, w); err != nil {
				return nil, err
			}
		}
	}
	return msgs, nil
}

// writeUpdates writes a committed batch's updates to the Kafka sink,
// unless they are there already.
func (r *jobRunner) writeUpdates(ctx context.Context, batchID int64, res *sluicev1.BatchResult) error {
	msgs, err := updateMessages(r.spec, batchID, res)
	if err != nil {
		return jobFailure("batch %d: %v", batchID, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	if r.updates == nil {
		r.updates = kafkasrc.NewSinks(r.logger.Named("updates"), kafkasrc.WithCapacity(1))
		r.fenced = false
	}
	ks := r.spec.GetSink().GetKafka()
	skipped, err := r.updates.Transact(ctx, kafkasrc.TxnTask{
		Job: r.name, Incarnation: r.incarnation,
		Cluster: jobspec.Sink(r.spec), Properties: ks.GetProperties(),
		TransactionalID: jobspec.UpdatesTransactionalID(r.spec, r.incarnation),
		Timeout:         ks.GetTransactionTimeout().AsDuration(),
		Group:           jobspec.UpdatesGroupID(r.name, r.incarnation),
		Source:          kafkasrc.Range{Topic: ks.GetTopic(), Partition: 0, From: batchID - 1, Until: batchID},
		// The first write of a runner fences a deposed leader's open
		// transaction at once rather than when it times out.
		Fence: !r.fenced,
		BeforeCommit: func() {
			if h := r.hooks.BeforeUpdateCommit; h != nil {
				h(batchID)
			}
		},
	}, msgs)
	if errors.Is(err, kafkasrc.ErrPermanent) {
		return jobFailure("batch %d: writing its updates to the Kafka sink: %v", batchID, err)
	}
	if err != nil {
		return fmt.Errorf("write the updates of batch %d: %w", batchID, err)
	}
	r.fenced = true
	if skipped {
		r.logger.Info("updates of the batch already in Kafka", "batch", batchID)
	}
	return nil
}

// catchUpUpdates writes the last committed batch's updates if a crash kept
// them from Kafka, before the runner commits any other batch.
func (r *jobRunner) catchUpUpdates(ctx context.Context, lastCommitted int64) error {
	if !jobspec.UpdateStream(r.spec) || lastCommitted <= 0 {
		return nil
	}
	res, err := retry(ctx, r, "read the last batch's result", func(ctx context.Context) (*sluicev1.BatchResult, error) {
		res, err := r.store.Result(ctx, r.name, lastCommitted)
		if errors.Is(err, offsetstore.ErrNotFound) {
			return nil, nil
		}
		return res, err
	})
	if err != nil || res == nil {
		return err
	}
	return r.writeUpdates(ctx, lastCommitted, res)
}

// closeUpdates releases the update stream's producer.
func (r *jobRunner) closeUpdates() {
	if r.updates != nil {
		r.updates.Close()
		r.updates = nil
	}
}
