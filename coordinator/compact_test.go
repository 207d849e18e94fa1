package coordinator

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// fakeEtcd answers revisions from a list and records compactions.
type fakeEtcd struct {
	revs       []int64 // 0 is an error
	compactErr map[int64]error
	compacted  []int64
}

func (f *fakeEtcd) Revision(context.Context) (int64, error) {
	r := f.revs[0]
	f.revs = f.revs[1:]
	if r == 0 {
		return 0, errors.New("etcd unreachable")
	}
	return r, nil
}

func (f *fakeEtcd) Compact(_ context.Context, rev int64) error {
	f.compacted = append(f.compacted, rev)
	return f.compactErr[rev]
}

func TestRunCompactions(t *testing.T) {
	tests := []struct {
		name       string
		revs       []int64
		compactErr map[int64]error
		want       []int64
	}{
		{name: "one tick compacts nothing", revs: []int64{10}, want: nil},
		{name: "each tick compacts to the revision of the tick before", revs: []int64{10, 25, 40, 41}, want: []int64{10, 25, 40}},
		{name: "a tick without a revision keeps the one before", revs: []int64{10, 0, 30, 50}, want: []int64{10, 30}},
		{
			name: "already compacted further, and other errors, go on",
			revs: []int64{10, 20, 30, 40}, compactErr: map[int64]error{10: rpctypes.ErrCompacted, 20: errors.New("timeout")},
			want: []int64{10, 20, 30},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The last tick only synchronises: its revision read fails.
			f := &fakeEtcd{revs: append(append([]int64(nil), tc.revs...), 0), compactErr: tc.compactErr}
			ctx, cancel := context.WithCancel(context.Background())
			ticks := make(chan time.Time)
			done := make(chan struct{})
			go func() {
				defer close(done)
				runCompactions(ctx, ticks, f, hclog.NewNullLogger())
			}()
			for range tc.revs {
				ticks <- time.Now()
			}
			// A tick is taken only after the one before was handled; the
			// last one is handled before the loop sees the cancel.
			ticks <- time.Time{}
			cancel()
			<-done
			if !reflect.DeepEqual(f.compacted, tc.want) {
				t.Errorf("compacted to %v, want %v", f.compacted, tc.want)
			}
		})
	}
}
