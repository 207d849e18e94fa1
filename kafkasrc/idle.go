package kafkasrc

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
)

// sweepIdle calls closeIdle every timeout/checks until ctx ends, with the
// time before which a client counts as idle, and logs what it closed. The
// consumer cache, the pool and the admin pool each close the clients no
// job used for a while this way.
func sweepIdle(ctx context.Context, timeout time.Duration, checks int, closeIdle func(before time.Time) int, logger hclog.Logger, what string) {
	t := time.NewTicker(timeout / time.Duration(checks))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := closeIdle(time.Now().Add(-timeout)); n > 0 {
				logger.Debug("closed idle "+what, "count", n)
			}
		}
	}
}
