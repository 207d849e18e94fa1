package kafkasrc

import (
	"errors"
	"testing"
)

func TestAdminLeaders(t *testing.T) {
	_, cl := newTestCluster(t, 3, "orders")
	a := newTestAdmin(t, cl)
	ctx := testCtx(t)

	tps := []TopicPartition{{"orders", 0}, {"orders", 2}}
	got, err := a.Leaders(ctx, tps)
	if err != nil {
		t.Fatalf("Leaders: %v", err)
	}
	// kfake's brokers listen on 127.0.0.1; only the partitions asked for
	// are answered.
	if len(got) != 2 || got[tps[0]] != "127.0.0.1" || got[tps[1]] != "127.0.0.1" {
		t.Errorf("Leaders = %v, want orders/0 and orders/2 on 127.0.0.1", got)
	}
	if _, err := a.Leaders(ctx, []TopicPartition{{"nope", 0}}); !errors.Is(err, ErrUnknownTopic) {
		t.Errorf("Leaders(nope/0): %v, want ErrUnknownTopic", err)
	}
	if got, err := a.Leaders(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("Leaders(nil) = %v, %v, want empty, nil", got, err)
	}
}
