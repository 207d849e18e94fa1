package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// defaultCompactInterval applies when Config.CompactInterval is zero.
const defaultCompactInterval = 5 * time.Minute

// compact keeps etcd's history bounded while this coordinator leads: every
// CompactInterval it compacts etcd to the revision it was at one interval
// earlier, so that a watcher (a client's WatchBatches, a standby) has a
// whole interval to catch up before the history it has yet to read goes.
// A negative interval disables it (an operator or etcd's own
// --auto-compaction-retention compacts instead). It returns when ctx ends.
func (c *Coordinator) compact(ctx context.Context) {
	interval := c.cfg.CompactInterval
	if interval == 0 {
		interval = defaultCompactInterval
	}
	if interval < 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	runCompactions(ctx, t.C, etcdCompactor{c.cfg.Etcd, c.store.ElectionPrefix()}, c.logger.Named("compact"))
}

// compactor is the part of etcd that compaction needs.
type compactor interface {
	// Revision is etcd's current revision.
	Revision(ctx context.Context) (int64, error)
	// Compact discards the history before rev.
	Compact(ctx context.Context, rev int64) error
}

type etcdCompactor struct {
	cli *clientv3.Client
	key string // any key: only the response header is used
}

func (e etcdCompactor) Revision(ctx context.Context) (int64, error) {
	resp, err := e.cli.Get(ctx, e.key, clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

func (e etcdCompactor) Compact(ctx context.Context, rev int64) error {
	_, err := e.cli.Compact(ctx, rev)
	return err
}

// runCompactions notes etcd's revision at every tick and compacts to the
// one noted at the tick before, until ctx ends.
func runCompactions(ctx context.Context, ticks <-chan time.Time, etcd compactor, logger hclog.Logger) {
	var prev int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rev, err := etcd.Revision(rctx)
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				logger.Warn("could not read etcd's revision to compact", "error", err)
			}
			continue
		}
		if prev > 0 {
			err := etcd.Compact(rctx, prev)
			switch {
			case err == nil:
				logger.Debug("compacted etcd", "revision", prev)
			case errors.Is(err, rpctypes.ErrCompacted):
				// Compacted past it already (etcd's auto-compaction, an operator).
			case ctx.Err() == nil:
				logger.Warn("could not compact etcd", "revision", prev, "error", err)
			}
		}
		cancel()
		prev = rev
	}
}
