package kafkasrc

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
)

// TxnInfo is the state of one transactional id.
type TxnInfo struct {
	ID            string
	State         string
	ProducerID    int64
	ProducerEpoch int16
	// Partitions written by the ongoing transaction, as topic/partition.
	Partitions []string
}

// ListTransactions lists the transactional ids of the cluster c that start
// with prefix, and their state. confluent-kafka-go has no client for the
// ListTransactions and DescribeTransactions APIs (KIP-664), so this uses
// franz-go's admin client, already a dependency as the development broker's
// client. It connects with c's TLS and SASL properties (see franzOptions);
// security properties it cannot honour are refused, naming the property.
func ListTransactions(ctx context.Context, c Cluster, prefix string) ([]TxnInfo, error) {
	cl, err := franzClient(c)
	if err != nil {
		return nil, fmt.Errorf("list transactions: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	listed, err := adm.ListTransactions(ctx, nil, nil)
	if err != nil {
		return nil, franzPermanent(fmt.Errorf("list transactions: %w", err))
	}
	var ids []string
	for _, t := range listed.Sorted() {
		if strings.HasPrefix(t.TxnID, prefix) {
			ids = append(ids, t.TxnID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	described, err := adm.DescribeTransactions(ctx, ids...)
	if err != nil {
		return nil, franzPermanent(fmt.Errorf("describe transactions: %w", err))
	}
	var out []TxnInfo
	for _, d := range described.Sorted() {
		if d.Err != nil {
			return nil, fmt.Errorf("describe transaction %s: %w", d.TxnID, d.Err)
		}
		info := TxnInfo{ID: d.TxnID, State: d.State, ProducerID: d.ProducerID, ProducerEpoch: d.ProducerEpoch}
		for _, tp := range d.Topics.Sorted() {
			for _, p := range tp.Partitions {
				info.Partitions = append(info.Partitions, fmt.Sprintf("%s/%d", tp.Topic, p))
			}
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
